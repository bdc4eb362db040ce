#include "base/directory.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace kvmm {
namespace {

// O_NOFOLLOW on a symbolic link fails with ELOOP (open(2)); O_DIRECTORY | O_NOFOLLOW on one
// gives ELOOP or ENOTDIR depending on the kernel, so the link is confirmed with fstatat.
bool is_symbolic_link(int directory, std::string const& name) {
    struct stat status {};
    return ::fstatat(directory, name.c_str(), &status, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(status.st_mode);
}

} // namespace

Expected<Directory> Directory::open(std::filesystem::path const& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("open directory '{}'", path.string()));
    return Directory(std::move(fd), path);
}

Expected<void> Directory::check_name(std::string_view name) const {
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
        name.find('\0') != std::string_view::npos)
        return Error::format("'{}' in '{}' is not a single file name", name, m_path.string());
    return {};
}

Expected<Directory> Directory::subdirectory(std::string_view name, std::optional<mode_t> create_mode) const {
    TRY(check_name(name));
    std::string const component(name);
    auto const path = m_path / component;
    if (create_mode && ::mkdirat(m_fd.get(), component.c_str(), *create_mode) != 0 && errno != EEXIST)
        return Error::from_errno(fmt::format("mkdir '{}'", path.string()));
    UniqueFd fd(::openat(m_fd.get(), component.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.is_valid()) {
        if (is_symbolic_link(m_fd.get(), component))
            return Error(fmt::format("'{}' is a symbolic link; links inside the state directory are not followed",
                                     path.string()),
                         ELOOP);
        return Error::from_errno(fmt::format("open directory '{}'", path.string()));
    }
    return Directory(std::move(fd), path);
}

Expected<UniqueFd> Directory::open_file(std::string_view name, int flags, mode_t mode) const {
    TRY(check_name(name));
    std::string const component(name);
    UniqueFd fd(::openat(m_fd.get(), component.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!fd.is_valid()) {
        int const error = errno;
        if (error == ELOOP)
            return Error(fmt::format("'{}' is a symbolic link; links inside the state directory are not followed",
                                     (m_path / component).string()),
                         ELOOP);
        errno = error;
        return Error::from_errno(fmt::format("open '{}'", (m_path / component).string()));
    }
    return fd;
}

Expected<void> Directory::write_atomically(std::string_view name, std::string_view contents, mode_t mode,
                                           std::function<void()> const& before_rename) const {
    TRY(check_name(name));
    std::string const temporary = std::string(name) + ".tmp";
    // Whatever is at NAME.tmp (a crash's leftover, or a planted link) goes; O_EXCL then makes
    // sure the file written is the one created here.
    if (::unlinkat(m_fd.get(), temporary.c_str(), 0) != 0 && errno != ENOENT)
        return Error::from_errno(fmt::format("remove '{}'", (m_path / temporary).string()));
    {
        auto fd = TRY(open_file(temporary, O_WRONLY | O_CREAT | O_EXCL, mode));
        auto const fail = [&](std::string const& what) {
            auto error = Error::from_errno(fmt::format("{} '{}'", what, (m_path / temporary).string()));
            ::unlinkat(m_fd.get(), temporary.c_str(), 0);
            return error;
        };
        // openat() applies the umask; the caller asked for exactly `mode`.
        if (::fchmod(fd.get(), mode) != 0)
            return fail(fmt::format("chmod {:o}", mode));
        std::string_view rest = contents;
        while (!rest.empty()) {
            ssize_t const written = ::write(fd.get(), rest.data(), rest.size());
            if (written < 0 && errno == EINTR)
                continue;
            if (written <= 0)
                return fail("write");
            rest.remove_prefix(static_cast<size_t>(written));
        }
        if (::fsync(fd.get()) != 0)
            return fail("fsync");
    }
    if (before_rename)
        before_rename();
    std::string const target(name);
    if (::renameat(m_fd.get(), temporary.c_str(), m_fd.get(), target.c_str()) != 0) {
        auto error = Error::from_errno(
            fmt::format("rename '{}' to '{}'", (m_path / temporary).string(), (m_path / target).string()));
        ::unlinkat(m_fd.get(), temporary.c_str(), 0);
        return error;
    }
    return sync();
}

Expected<std::optional<std::string>> Directory::read_file(std::string_view name, uint64_t max_size) const {
    auto fd = open_file(name, O_RDONLY);
    if (!fd) {
        if (fd.error().error_number() == ENOENT)
            return std::optional<std::string>();
        return fd.release_error();
    }
    auto const path = (m_path / std::string(name)).string();
    std::string contents;
    char buffer[4096];
    while (true) {
        ssize_t const got = ::read(fd->get(), buffer, sizeof(buffer));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return Error::from_errno(fmt::format("read '{}'", path));
        if (got == 0)
            break;
        contents.append(buffer, static_cast<size_t>(got));
        if (contents.size() > max_size)
            return Error::format("'{}' is larger than {} bytes", path, max_size);
    }
    return std::optional<std::string>(std::move(contents));
}

Expected<bool> Directory::remove(std::string_view name) const {
    TRY(check_name(name));
    std::string const component(name);
    if (::unlinkat(m_fd.get(), component.c_str(), 0) == 0)
        return true;
    if (errno == ENOENT)
        return false;
    return Error::from_errno(fmt::format("remove '{}'", (m_path / component).string()));
}

Expected<void> Directory::sync() const {
    if (::fsync(m_fd.get()) != 0)
        return Error::from_errno(fmt::format("fsync directory '{}'", m_path.string()));
    return {};
}

} // namespace kvmm

#include "jailer/jail_paths.h"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

namespace kvmm::jailer {
namespace {

// The non-empty components of a relative path: "a//b/" is {"a", "b"}.
std::vector<std::string> components(std::string const& relative) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (start < relative.size()) {
        auto slash = relative.find('/', start);
        if (slash == std::string::npos)
            slash = relative.size();
        if (slash > start)
            parts.push_back(relative.substr(start, slash - start));
        start = slash + 1;
    }
    return parts;
}

// Opens a directory below `base_fd` one component at a time, refusing symlinks.
Expected<UniqueFd> open_directory_below(int base_fd, std::string const& relative) {
    UniqueFd current(::fcntl(base_fd, F_DUPFD_CLOEXEC, 0));
    if (!current.is_valid())
        return Error::from_errno("duplicating the chroot base descriptor");
    for (auto const& component : components(relative)) {
        if (component == "." || component == "..")
            return Error::format("{}: a '.' or '..' component has no place in a jail path", relative);
        UniqueFd next(::openat(current.get(), component.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!next.is_valid())
            return Error::from_errno(fmt::format("opening {} (directory, no symlinks)", relative));
        current = std::move(next);
    }
    return current;
}

// Splits "a/b/c" into the directory "a/b" and the name "c".
std::pair<std::string, std::string> split_last(std::string const& relative) {
    auto const slash = relative.rfind('/');
    if (slash == std::string::npos)
        return { "", relative };
    return { relative.substr(0, slash), relative.substr(slash + 1) };
}

} // namespace

Expected<UniqueFd> open_chroot_base(std::string const& path) {
    struct stat link_status {};
    if (::lstat(path.c_str(), &link_status) != 0)
        return Error::from_errno(fmt::format("--chroot-base-dir {}", path));
    if (S_ISLNK(link_status.st_mode))
        return Error::format("--chroot-base-dir {}: is a symlink; give the real directory", path);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("--chroot-base-dir {}", path));
    // The checks are on the opened directory, so a rename between lstat and open cannot slip
    // another one in.
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("--chroot-base-dir {}: fstat", path));
    if ((status.st_mode & S_IWOTH) != 0)
        return Error::format("--chroot-base-dir {}: is writable by everyone (mode {:04o}); anyone could plant "
                             "files in the jails",
                             path, status.st_mode & 07777);
    if (status.st_uid != 0 && status.st_uid != ::geteuid())
        return Error::format("--chroot-base-dir {}: is owned by uid {}, not by root", path, status.st_uid);
    if (status.st_gid != 0 && (status.st_mode & S_IWGRP) != 0)
        return Error::format("--chroot-base-dir {}: is writable by group {} (mode {:04o})", path, status.st_gid,
                             status.st_mode & 07777);
    return fd;
}

Expected<UniqueFd> open_exec_file(std::string const& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("--exec-file {}", path));
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("--exec-file {}: fstat", path));
    if (!S_ISREG(status.st_mode))
        return Error::format("--exec-file {}: is not a regular file", path);
    if ((status.st_mode & 0111) == 0)
        return Error::format("--exec-file {}: is not executable (mode {:04o})", path, status.st_mode & 07777);
    return fd;
}

Expected<UniqueFd> open_regular_file(std::string const& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(path);
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("{}: fstat", path));
    if (!S_ISREG(status.st_mode))
        return Error::format("{}: is not a regular file", path);
    return fd;
}

Expected<dev_t> character_device_number(std::string const& path) {
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0)
        return Error::from_errno(path);
    if (!S_ISCHR(status.st_mode))
        return Error::format("{}: is not a character device", path);
    return status.st_rdev;
}

Expected<void> JailTree::make_directories(std::string const& relative, mode_t mode) {
    std::string prefix;
    for (auto const& component : components(relative)) {
        auto const parent = TRY(open_directory_below(m_base.get(), prefix));
        prefix = prefix.empty() ? component : prefix + "/" + component;
        if (::mkdirat(parent.get(), component.c_str(), mode) == 0) {
            m_created.push_back({ prefix, true });
            // mkdir applies the umask; the mode is what the jail's layout says.
            UniqueFd created(
                ::openat(parent.get(), component.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!created.is_valid() || ::fchmod(created.get(), mode) != 0)
                return Error::from_errno(fmt::format("setting the mode of {}", prefix));
        } else if (errno != EEXIST) {
            return Error::from_errno(fmt::format("creating {}", prefix));
        }
        // An existing component must be a real directory (opened the way the next step will)
        // and root's: in one the jailed user owns, it could swap what the jailer puts there. The
        // jail root is the exception: a previous run gave it to its uid, and the administrator
        // may have placed files in it.
        auto const existing = TRY(open_directory_below(m_base.get(), prefix));
        struct stat status {};
        if (::fstat(existing.get(), &status) != 0)
            return Error::from_errno(fmt::format("fstat {}", prefix));
        if (status.st_uid != 0 && prefix != m_jail_root)
            return Error::format("{}: exists and is owned by uid {}, not root (left by a jailed process? remove "
                                 "the jail first)",
                                 prefix, status.st_uid);
    }
    return {};
}

Expected<void> JailTree::copy_file(int source, std::string const& relative, mode_t mode) {
    auto const [directory, name] = split_last(relative);
    auto const parent = TRY(open_directory_below(m_base.get(), directory));
    UniqueFd target(::openat(parent.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!target.is_valid()) {
        if (errno == EEXIST)
            return Error::format("{}: already exists (a jail with this id was not removed?)", relative);
        return Error::from_errno(fmt::format("creating {}", relative));
    }
    m_created.push_back({ relative, false });
    struct stat status {};
    if (::fstat(source, &status) != 0)
        return Error::from_errno(fmt::format("fstat of the source of {}", relative));
    off_t offset = 0;
    while (offset < status.st_size) {
        auto const copied = ::sendfile(target.get(), source, &offset, static_cast<size_t>(status.st_size - offset));
        if (copied < 0 && errno == EINTR)
            continue;
        if (copied <= 0)
            return Error::from_errno(fmt::format("copying {} bytes into {}", status.st_size, relative));
    }
    if (::fchown(target.get(), 0, 0) != 0 || ::fchmod(target.get(), mode) != 0)
        return Error::from_errno(fmt::format("setting owner root and mode {:04o} on {}", mode, relative));
    return {};
}

Expected<bool> JailTree::link_or_copy_file(int source, std::string const& relative, mode_t mode) {
    struct stat status {};
    if (::fstat(source, &status) != 0)
        return Error::from_errno(fmt::format("fstat of the source of {}", relative));
    if (status.st_uid == 0 && (status.st_mode & (S_IWGRP | S_IWOTH)) == 0) {
        auto const [directory, name] = split_last(relative);
        auto const parent = TRY(open_directory_below(m_base.get(), directory));
        // AT_EMPTY_PATH links the descriptor's own file (checked above), not a path (linkat(2);
        // it needs CAP_DAC_READ_SEARCH, which the jailer has).
        if (::linkat(source, "", parent.get(), name.c_str(), AT_EMPTY_PATH) == 0) {
            m_created.push_back({ relative, false });
            return true;
        }
        if (errno == EEXIST)
            return Error::format("{}: already exists (a jail with this id was not removed?)", relative);
        // EXDEV (another file system) and the rest: a copy is always possible.
    }
    TRY(copy_file(source, relative, mode));
    return false;
}

Expected<void> JailTree::make_device(std::string const& relative, dev_t device, uid_t uid, gid_t gid) {
    auto const [directory, name] = split_last(relative);
    auto const parent = TRY(open_directory_below(m_base.get(), directory));
    if (::mknodat(parent.get(), name.c_str(), S_IFCHR | 0600, device) != 0) {
        if (errno == EEXIST)
            return Error::format("{}: already exists (a jail with this id was not removed?)", relative);
        return Error::from_errno(fmt::format("mknod {}", relative));
    }
    m_created.push_back({ relative, false });
    if (::fchownat(parent.get(), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0 ||
        ::fchmodat(parent.get(), name.c_str(), 0600, 0) != 0)
        return Error::from_errno(fmt::format("setting owner {}:{} and mode 0600 on {}", uid, gid, relative));
    return {};
}

std::vector<std::string> JailTree::remove_created() {
    std::vector<std::string> left;
    for (auto created = m_created.rbegin(); created != m_created.rend(); ++created) {
        auto const [directory, name] = split_last(created->relative);
        auto parent = open_directory_below(m_base.get(), directory);
        if (!parent || ::unlinkat(parent->get(), name.c_str(), created->directory ? AT_REMOVEDIR : 0) != 0)
            left.push_back(created->relative);
    }
    m_created.clear();
    return left;
}

} // namespace kvmm::jailer

#include "base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace kvmm {

Expected<UniqueFd> open_read_only(std::string const& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return Error::from_errno(fmt::format("cannot open '{}'", path));
    return UniqueFd(fd);
}

Expected<std::vector<std::byte>> read_file(std::string const& path, uint64_t max_size) {
    auto fd = TRY(open_read_only(path));
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("cannot stat '{}'", path));
    if (!S_ISREG(status.st_mode))
        return Error::format("'{}' is not a regular file", path);
    auto const size = static_cast<uint64_t>(status.st_size);
    if (size > max_size)
        return Error::format("'{}' is {} bytes, more than the limit of {} bytes", path, size, max_size);
    std::vector<std::byte> content(size);
    uint64_t done = 0;
    while (done < size) {
        ssize_t got = ::read(fd.get(), content.data() + done, size - done);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno(fmt::format("cannot read '{}'", path));
        }
        if (got == 0)
            break; // The file shrank while we read it; hand back what is there.
        done += static_cast<uint64_t>(got);
    }
    content.resize(done);
    return content;
}

Expected<std::string> read_text_file(std::string const& path, uint64_t max_size) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("open {}", path));
    std::string text;
    char buffer[8192];
    while (true) {
        ssize_t const count = ::read(fd.get(), buffer, sizeof(buffer));
        if (count < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno(fmt::format("read {}", path));
        }
        if (count == 0)
            break;
        text.append(buffer, static_cast<size_t>(count));
        if (text.size() > max_size)
            return Error::format("{} is larger than {} bytes", path, max_size);
    }
    return text;
}

} // namespace kvmm

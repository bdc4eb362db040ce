#include "devices/legacy/byte_sink.h"

#include <fcntl.h>
#include <sys/stat.h>

namespace kvmm {

namespace {

class NullSink final : public ByteSink {
public:
    void write(std::span<uint8_t const>) override {}
};

} // namespace

Expected<UniqueFd> open_console_file(std::string const& path) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot open console file '{}'", path));
    // A file that existed keeps its old mode through open(); a device or FIFO (/dev/stdout,
    // a pipe to a collector) is not ours to change.
    struct stat status {};
    if (::fstat(fd.get(), &status) == 0 && S_ISREG(status.st_mode) && (status.st_mode & 07777) != 0600 &&
        ::fchmod(fd.get(), 0600) != 0)
        return Error::from_errno(fmt::format("cannot make console file '{}' mode 0600", path));
    return fd;
}

std::unique_ptr<ByteSink> make_null_sink() { return std::make_unique<NullSink>(); }

} // namespace kvmm

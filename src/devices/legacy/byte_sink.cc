#include "devices/legacy/byte_sink.h"

#include <fcntl.h>

namespace kvmm {

namespace {

class NullSink final : public ByteSink {
public:
    void write(std::span<uint8_t const>) override {}
};

} // namespace

Expected<UniqueFd> open_console_file(std::string const& path) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot open console file '{}'", path));
    return fd;
}

std::unique_ptr<ByteSink> make_null_sink() { return std::make_unique<NullSink>(); }

} // namespace kvmm

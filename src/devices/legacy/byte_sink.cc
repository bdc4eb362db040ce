#include "devices/legacy/byte_sink.h"

#include "base/unique_fd.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace kvmm {

namespace {

class FdSink final : public ByteSink {
public:
    FdSink(int fd, UniqueFd owned, std::string name) : m_fd(fd), m_owned(std::move(owned)), m_name(std::move(name)) {}

    void write(std::span<uint8_t const> bytes) override {
        size_t done = 0;
        while (done < bytes.size()) {
            ssize_t const written = ::write(m_fd, bytes.data() + done, bytes.size() - done);
            if (written < 0 && errno == EINTR)
                continue;
            if (written <= 0) {
                // A closed pipe or full disk must not stop the guest: drop the output, say so once.
                if (!m_reported.exchange(true))
                    spdlog::warn("console output to {} failed, dropping output: {}", m_name, std::strerror(errno));
                return;
            }
            done += static_cast<size_t>(written);
        }
    }

private:
    int m_fd;
    UniqueFd m_owned;
    std::string m_name;
    std::atomic<bool> m_reported { false };
};

class NullSink final : public ByteSink {
public:
    void write(std::span<uint8_t const>) override {}
};

} // namespace

std::unique_ptr<ByteSink> make_stdout_sink() { return std::make_unique<FdSink>(STDOUT_FILENO, UniqueFd(), "stdout"); }

Expected<std::unique_ptr<ByteSink>> make_file_sink(std::string const& path) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return Error::from_errno(fmt::format("cannot open console file '{}'", path));
    return std::unique_ptr<ByteSink>(std::make_unique<FdSink>(fd, UniqueFd(fd), path));
}

std::unique_ptr<ByteSink> make_null_sink() { return std::make_unique<NullSink>(); }

} // namespace kvmm

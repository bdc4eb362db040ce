#include "devices/virtio/vsock/vsock_host_socket.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace kvmm::virtio::vsock {

namespace {

Expected<sockaddr_un> unix_address(std::string const& path) {
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    // unix(7): sun_path holds 108 bytes including the terminating NUL.
    if (path.empty() || path.size() >= sizeof(address.sun_path))
        return Error::format("vsock socket path '{}': length {} is not between 1 and {}", path, path.size(),
                             sizeof(address.sun_path) - 1);
    std::memcpy(address.sun_path, path.data(), path.size());
    return address;
}

Expected<UniqueFd> stream_socket() {
    int const fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return Error::from_errno("socket(AF_UNIX)");
    return UniqueFd(fd);
}

} // namespace

Expected<UniqueFd> listen_unix(std::string const& path) {
    auto const address = TRY(unix_address(path));
    struct stat existing {};
    if (::lstat(path.c_str(), &existing) == 0) {
        if (!S_ISSOCK(existing.st_mode))
            return Error::format("vsock socket path '{}' exists and is not a socket", path);
        // A listener still answering means another VMM owns the path; refusing keeps us from
        // stealing its clients. ECONNREFUSED means the file is a leftover.
        auto probe = TRY(stream_socket());
        if (::connect(probe.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) == 0 ||
            errno == EAGAIN || errno == EINPROGRESS)
            return Error::format("vsock socket path '{}' is in use by a live listener", path);
        if (errno != ECONNREFUSED)
            return Error::from_errno(fmt::format("probing vsock socket path '{}'", path));
        if (::unlink(path.c_str()) != 0)
            return Error::from_errno(fmt::format("removing stale vsock socket '{}'", path));
    }
    auto listener = TRY(stream_socket());
    if (::bind(listener.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0)
        return Error::from_errno(fmt::format("bind vsock socket '{}'", path));
    if (::listen(listener.get(), SOMAXCONN) != 0)
        return Error::from_errno(fmt::format("listen on vsock socket '{}'", path));
    return listener;
}

Expected<UniqueFd> connect_unix(std::string const& path) {
    auto const address = TRY(unix_address(path));
    auto stream = TRY(stream_socket());
    if (::connect(stream.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0)
        return Error::from_errno(fmt::format("connect to '{}'", path));
    return stream;
}

std::optional<uint32_t> parse_connect_line(std::string_view line) {
    constexpr std::string_view PREFIX = "CONNECT ";
    if (!line.starts_with(PREFIX))
        return std::nullopt;
    std::string_view const digits = line.substr(PREFIX.size());
    if (digits.empty() || digits.front() < '0' || digits.front() > '9')
        return std::nullopt;
    uint32_t port = 0;
    auto const [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (error != std::errc() || end != digits.data() + digits.size())
        return std::nullopt;
    return port;
}

} // namespace kvmm::virtio::vsock

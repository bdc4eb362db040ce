#include "devices/virtio/vsock/vsock_host_socket.h"

#include "base/unix_socket.h"

#include <charconv>

namespace kvmm::virtio::vsock {

Expected<UniqueFd> listen_unix(std::string const& path) {
    // The device removes the socket file itself when it goes (VsockDevice keeps the path).
    // Mode 0600 whatever the umask, like the API and console sockets: whoever connects talks
    // to the guest's services as the host.
    auto listener = TRY(UnixListener::listen(path, { .what = "vsock socket", .mode = 0600, .non_blocking = true }));
    return listener.release();
}

Expected<UniqueFd> connect_unix(std::string const& path) {
    return connect_unix_socket(path, UnixConnectOptions { .non_blocking = true, .wait = std::nullopt });
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

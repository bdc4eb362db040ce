// Host side of the hybrid vsock (the scheme Firecracker documents in
// docs/vsock.md): the device listens on one Unix stream socket, host programs
// connect to it and ask for a guest port with "CONNECT <port>\n" (answered
// "OK <host port>\n"); a guest connection to host port P goes to the Unix
// socket "<path>_<P>".
//
// Every socket here is non-blocking and close-on-exec.
// Threading: plain functions; the device calls them on its event-loop thread.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kvmm::virtio::vsock {

// The longest handshake line a client may send ("CONNECT 4294967295\n" is 19 bytes).
inline constexpr size_t MAX_CONNECT_LINE = 32;

// Binds and listens on `path`. A socket file nobody listens on any more (left by a process
// that died) is removed first; a live one, or a path that is not a socket, is an Error.
Expected<UniqueFd> listen_unix(std::string const& path);

// Connects to `path` without blocking; a listener that cannot take the connection now (full
// backlog) counts as a failure, so the caller never waits on a guest's behalf.
Expected<UniqueFd> connect_unix(std::string const& path);

// "CONNECT <port>" (without the newline) -> port; anything else (extra spaces, signs,
// trailing text, a value over 32 bits) -> nullopt.
std::optional<uint32_t> parse_connect_line(std::string_view line);

} // namespace kvmm::virtio::vsock

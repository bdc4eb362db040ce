// Unix stream sockets in one place: the address checks, a listener that takes over a stale
// socket file and removes its own file again, and connecting with a bounded wait.
//
// Listening on a path where a socket file already exists: if something answers there (the
// probe; by default a connection attempt that is accepted, queued or refused for a full
// backlog), the path is in use and listen() fails naming it; a socket file nobody listens on
// (left by a process that died) is removed and replaced; anything that is not a socket is
// never touched. The listener removes the socket file it created when it is closed or
// destroyed, but only while that path is still the same file (same device and inode): a
// successor that took the path over keeps its socket.
//
// Every socket here is close-on-exec. Errors name the socket (`what`) and its path.
// Threading: plain functions; a UnixListener is a value with one owner at a time.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace kvmm {

// The longest path sun_path holds with its terminating NUL (107 bytes on Linux).
inline constexpr size_t MAX_UNIX_SOCKET_PATH = sizeof(sockaddr_un::sun_path) - 1;

// The address of `path`; an empty path, one with a NUL byte or one longer than
// MAX_UNIX_SOCKET_PATH is an error naming `what`, the path and the limit.
Expected<sockaddr_un> unix_socket_address(std::string const& path, std::string_view what = "socket");

struct UnixListenOptions {
    // Names the socket in errors and log lines: "API socket", "console socket".
    std::string what { "socket" };
    // The socket file's mode, set before bind() so that there is no moment in which others may
    // connect; nullopt leaves it to the umask.
    std::optional<mode_t> mode {};
    int backlog { SOMAXCONN };
    // Whether the listening socket is non-blocking (what an event loop wants).
    bool non_blocking { true };
    // Says whether something serves the socket file already at the path: why it counts as live
    // (for the error), or nullopt for a stale file, which is replaced. Empty: the default probe,
    // a connection attempt (accepted, queued or a full backlog: live; refused: stale).
    std::function<Expected<std::optional<std::string>>(std::string const& path)> probe {};
};

class UnixListener {
public:
    static Expected<UnixListener> listen(std::string const& path, UnixListenOptions const& options = {});

    UnixListener() = default;
    ~UnixListener() { close(); }
    UnixListener(UnixListener&& other) noexcept;
    UnixListener& operator=(UnixListener&& other) noexcept;
    UnixListener(UnixListener const&) = delete;
    UnixListener& operator=(UnixListener const&) = delete;

    int fd() const { return m_fd.get(); }
    bool is_valid() const { return m_fd.is_valid(); }
    std::string const& path() const { return m_path; }

    // Removes the socket file (if it is still the one created here) and closes the socket.
    void close();
    // Hands the listening socket over; the file is then the new owner's to remove.
    UniqueFd release();

private:
    UnixListener(std::string path, UniqueFd fd) : m_path(std::move(path)), m_fd(std::move(fd)) {}

    std::string m_path;
    UniqueFd m_fd;
    dev_t m_device { 0 };
    ino_t m_inode { 0 };
    bool m_owns_file { false };
};

struct UnixConnectOptions {
    // The returned socket's mode; the default blocks.
    bool non_blocking { false };
    // How long a listener whose backlog is full (its server is not accepting) is retried; past
    // it, an error with errno ETIMEDOUT. nullopt: a blocking socket waits in connect() as long
    // as it takes, a non-blocking one fails at once (errno EAGAIN).
    std::optional<std::chrono::milliseconds> wait {};
};

Expected<UniqueFd> connect_unix_socket(std::string const& path, UnixConnectOptions const& options);
// A blocking socket, connected without a bound on the wait.
Expected<UniqueFd> connect_unix_socket(std::string const& path);
// A blocking socket, connected within `wait` (see UnixConnectOptions::wait).
Expected<UniqueFd> connect_unix_socket(std::string const& path, std::chrono::milliseconds wait);

} // namespace kvmm

#include "base/unix_socket.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace kvmm {

namespace {

using Clock = std::chrono::steady_clock;

Expected<UniqueFd> stream_socket(bool non_blocking) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (non_blocking ? SOCK_NONBLOCK : 0), 0));
    if (!fd.is_valid())
        return Error::from_errno("socket(AF_UNIX)");
    return fd;
}

Expected<void> set_non_blocking(int fd, bool non_blocking) {
    int const flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, non_blocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) != 0)
        return Error::from_errno("fcntl(O_NONBLOCK)");
    return {};
}

// The default liveness probe: a connection attempt that does not wait. Accepted (or queued,
// which is the same for a Unix socket) or refused for a full backlog means a live listener;
// ECONNREFUSED means a file nobody listens on.
Expected<std::optional<std::string>> answers_a_connection(std::string const& path, sockaddr_un const& address,
                                                          std::string_view what) {
    auto probe = TRY(stream_socket(true));
    if (::connect(probe.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) == 0)
        return std::optional<std::string>("another process is listening on it");
    if (errno == EAGAIN || errno == EINPROGRESS)
        return std::optional<std::string>("another process is listening on it (its backlog is full)");
    if (errno == ECONNREFUSED || errno == ENOENT) // ENOENT: removed since it was seen
        return std::optional<std::string>();
    return Error::from_errno(fmt::format("probing {} '{}'", what, path));
}

// Removes a socket file at `path` that nothing serves; refuses a live one and anything that is
// not a socket.
Expected<void> take_over_stale_socket(std::string const& path, sockaddr_un const& address,
                                      UnixListenOptions const& options) {
    struct stat existing {};
    if (::lstat(path.c_str(), &existing) != 0) {
        if (errno == ENOENT)
            return {};
        return Error::from_errno(fmt::format("{} path '{}'", options.what, path));
    }
    if (!S_ISSOCK(existing.st_mode))
        return Error::format("{} path '{}' exists and is not a socket", options.what, path);
    auto const live = options.probe ? TRY(options.probe(path)) : TRY(answers_a_connection(path, address, options.what));
    if (live)
        return Error::format("{} '{}' is in use: {}", options.what, path, *live);
    spdlog::warn("{} '{}': nothing answers there; replacing the stale socket file", options.what, path);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return Error::from_errno(fmt::format("removing stale {} '{}'", options.what, path));
    return {};
}

} // namespace

Expected<sockaddr_un> unix_socket_address(std::string const& path, std::string_view what) {
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    if (path.empty())
        return Error::format("{} path is empty", what);
    if (path.find('\0') != std::string::npos)
        return Error::format("{} path '{}' contains a NUL byte", what, std::string_view(path.c_str()));
    if (path.size() > MAX_UNIX_SOCKET_PATH)
        return Error::format("{} path '{}' is {} bytes long; a Unix socket path holds at most {} bytes", what, path,
                             path.size(), MAX_UNIX_SOCKET_PATH);
    std::memcpy(address.sun_path, path.data(), path.size());
    return address;
}

Expected<UnixListener> UnixListener::listen(std::string const& path, UnixListenOptions const& options) {
    auto const address = TRY(unix_socket_address(path, options.what));
    TRY(take_over_stale_socket(path, address, options));
    auto fd = TRY(stream_socket(options.non_blocking));
    // Linux gives the socket file the socket inode's mode (less the umask) at bind(), so setting
    // it first leaves no moment in which others could connect; chmod() below undoes the umask.
    if (options.mode && ::fchmod(fd.get(), *options.mode) != 0)
        return Error::from_errno(fmt::format("setting the mode of {} '{}'", options.what, path));
    if (::bind(fd.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0)
        return Error::from_errno(fmt::format("binding {} '{}'", options.what, path));
    UnixListener listener(path, std::move(fd));
    struct stat created {};
    if (::lstat(path.c_str(), &created) != 0) {
        // Removed or replaced already: not ours to unlink.
        return Error::from_errno(fmt::format("{} '{}'", options.what, path));
    }
    listener.m_device = created.st_dev;
    listener.m_inode = created.st_ino;
    listener.m_owns_file = true; // from here on, a failure removes the file again
    if (options.mode && ::chmod(path.c_str(), *options.mode) != 0)
        return Error::from_errno(fmt::format("setting the mode of {} '{}'", options.what, path));
    if (::listen(listener.fd(), options.backlog) != 0)
        return Error::from_errno(fmt::format("listening on {} '{}'", options.what, path));
    return listener;
}

UnixListener::UnixListener(UnixListener&& other) noexcept
    : m_path(std::move(other.m_path)), m_fd(std::move(other.m_fd)), m_device(other.m_device), m_inode(other.m_inode),
      m_owns_file(std::exchange(other.m_owns_file, false)) {}

UnixListener& UnixListener::operator=(UnixListener&& other) noexcept {
    if (this != &other) {
        close();
        m_path = std::move(other.m_path);
        m_fd = std::move(other.m_fd);
        m_device = other.m_device;
        m_inode = other.m_inode;
        m_owns_file = std::exchange(other.m_owns_file, false);
    }
    return *this;
}

void UnixListener::close() {
    // The file goes first: from then on nobody connects to a socket that is about to close,
    // and a successor may bind the path at once.
    if (m_owns_file) {
        struct stat current {};
        if (::lstat(m_path.c_str(), &current) == 0 && current.st_dev == m_device && current.st_ino == m_inode)
            ::unlink(m_path.c_str());
        m_owns_file = false;
    }
    m_fd.reset();
}

UniqueFd UnixListener::release() {
    m_owns_file = false;
    return std::move(m_fd);
}

Expected<UniqueFd> connect_unix_socket(std::string const& path, UnixConnectOptions const& options) {
    auto const address = TRY(unix_socket_address(path));
    bool const poll_backlog = options.wait.has_value();
    bool const non_blocking_connect = options.non_blocking || poll_backlog;
    auto fd = TRY(stream_socket(non_blocking_connect));
    auto const deadline = Clock::now() + options.wait.value_or(std::chrono::milliseconds(0));
    // A non-blocking connect to a Unix socket either completes at once or fails with EAGAIN
    // while the listener's backlog is full; there is nothing to poll for, so it is retried.
    while (::connect(fd.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0) {
        if (errno == EINTR && non_blocking_connect)
            continue; // (a blocking connect interrupted goes on in the background: not retried)
        if (errno != EAGAIN || !poll_backlog)
            return Error::from_errno(fmt::format("cannot connect to '{}'", path));
        if (Clock::now() >= deadline)
            return Error(fmt::format("cannot connect to '{}': not accepted within {} ms", path, options.wait->count()),
                         ETIMEDOUT);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (poll_backlog && !options.non_blocking)
        TRY(set_non_blocking(fd.get(), false));
    return fd;
}

Expected<UniqueFd> connect_unix_socket(std::string const& path) {
    return connect_unix_socket(path, UnixConnectOptions {});
}

Expected<UniqueFd> connect_unix_socket(std::string const& path, std::chrono::milliseconds wait) {
    return connect_unix_socket(path, UnixConnectOptions { .non_blocking = false, .wait = wait });
}

} // namespace kvmm

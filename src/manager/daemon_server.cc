#include "manager/daemon_server.h"

#include "manager/protocol.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace kvmm {

namespace {

int poll_milliseconds(std::chrono::steady_clock::duration left) {
    auto const milliseconds = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return static_cast<int>(std::clamp<int64_t>(milliseconds, 0, 60 * 60 * 1000));
}

// After a failed accept (EMFILE...), how long to wait before trying again, so that a listener
// that stays readable does not turn the accept thread into a busy loop.
constexpr int ACCEPT_BACKOFF_MS = 100;

// How long a daemon already on the socket has to answer before it counts as not running.
constexpr std::chrono::milliseconds IN_USE_PROBE_TIMEOUT { 2000 };

// Whether a daemon serves `socket_path`: what shows it (for the error message), or nullopt for
// a stale socket. Any answer line counts, an error included (a daemon at its client limit
// refuses with one, and may close before reading the request), and so does a connection that
// is not accepted in time: a full backlog is a busy daemon, not a dead one.
std::optional<std::string> answer_on_socket(std::string const& socket_path) {
    auto const deadline = std::chrono::steady_clock::now() + IN_USE_PROBE_TIMEOUT;
    auto connection = connect_unix_socket(socket_path, IN_USE_PROBE_TIMEOUT);
    if (!connection) {
        if (connection.error().error_number() == ETIMEDOUT)
            return fmt::format("it does not accept a connection within {} ms: its backlog is full",
                               IN_USE_PROBE_TIMEOUT.count());
        return std::nullopt;
    }
    int const fd = connection->get();
    // Sent without checking: a daemon that refuses closes without reading, and its refusal is
    // still there to be read.
    (void)send_all(fd, encode_line({ { "verb", "list" } }), deadline);
    LineBuffer lines;
    while (true) {
        auto line = lines.next_line();
        if (!line || *line)
            return std::string("it answered");
        auto const now = std::chrono::steady_clock::now();
        if (now >= deadline)
            return std::nullopt;
        pollfd entry { fd, POLLIN, 0 };
        if (::poll(&entry, 1, poll_milliseconds(deadline - now)) <= 0)
            continue;
        char buffer[4096];
        ssize_t const received = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
        if (received < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (received <= 0)
            return std::nullopt;
        lines.append(std::string_view(buffer, static_cast<size_t>(received)));
    }
}

} // namespace

Expected<std::unique_ptr<DaemonServer>> DaemonServer::start(std::string const& socket_path, Daemon& daemon,
                                                            DaemonServerOptions options) {
    if (options.max_clients == 0)
        return Error("the client limit must be at least 1");
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof(address.sun_path))
        return Error::format("socket path '{}' must be 1 to {} bytes long", socket_path, sizeof(address.sun_path) - 1);
    std::memcpy(address.sun_path, socket_path.data(), socket_path.size());
    struct stat existing {};
    if (::lstat(socket_path.c_str(), &existing) == 0) {
        if (!S_ISSOCK(existing.st_mode))
            return Error::format("'{}' exists and is not a socket", socket_path);
        // The state directory's lock already keeps a second daemon off this daemon's VMs; here
        // only a live socket is told from a stale one. Accepting connections is not enough: a
        // process that inherited the listening socket (a child of a killed daemon, from before
        // children closed what they inherit) keeps it open without serving it.
        if (auto alive = answer_on_socket(socket_path))
            return Error::format("'{}' is in use: another kvmmd is running ({})", socket_path, *alive);
        spdlog::warn("'{}' exists but no daemon answers there; replacing it", socket_path);
        if (::unlink(socket_path.c_str()) != 0)
            return Error::from_errno(fmt::format("removing stale socket '{}'", socket_path));
    }
    UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener.is_valid())
        return Error::from_errno("socket");
    if (::bind(listener.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0)
        return Error::from_errno(fmt::format("binding '{}'", socket_path));
    struct stat status {};
    if (::chmod(socket_path.c_str(), 0660) != 0 || ::stat(socket_path.c_str(), &status) != 0 ||
        ::listen(listener.get(), 128) != 0) {
        auto error = Error::from_errno(fmt::format("socket '{}'", socket_path));
        ::unlink(socket_path.c_str());
        return error;
    }
    auto stop_event = TRY(EventFd::create());
    std::unique_ptr<DaemonServer> server(
        new DaemonServer(socket_path, std::move(listener), std::move(stop_event), daemon, options, status.st_ino));
    server->m_accept_thread = std::thread([raw = server.get()] { raw->accept_loop(); });
    return server;
}

DaemonServer::DaemonServer(std::string socket_path, UniqueFd listener, EventFd stop_event, Daemon& daemon,
                           DaemonServerOptions options, ino_t inode)
    : m_socket_path(std::move(socket_path)), m_listener(std::move(listener)), m_stop_event(std::move(stop_event)),
      m_daemon(daemon), m_options(options), m_inode(inode) {}

DaemonServer::~DaemonServer() { stop(); }

void DaemonServer::stop() {
    {
        MutexLock guard(m_lock);
        if (m_stopped)
            return;
        m_stopped = true;
        for (auto& client : m_clients)
            ::shutdown(client.fd.get(), SHUT_RDWR);
    }
    (void)m_stop_event.signal();
    if (m_accept_thread.joinable())
        m_accept_thread.join();
    std::list<Client> clients;
    {
        MutexLock guard(m_lock);
        clients.swap(m_clients);
    }
    for (auto& client : clients) {
        if (client.thread.joinable())
            client.thread.join();
    }
    struct stat status {};
    if (::stat(m_socket_path.c_str(), &status) == 0 && status.st_ino == m_inode)
        ::unlink(m_socket_path.c_str());
}

void DaemonServer::join_finished_clients() {
    std::list<Client> finished;
    {
        MutexLock guard(m_lock);
        for (auto it = m_clients.begin(); it != m_clients.end();) {
            auto next = std::next(it);
            if (it->finished)
                finished.splice(finished.end(), m_clients, it);
            it = next;
        }
    }
    for (auto& client : finished)
        client.thread.join();
}

bool DaemonServer::make_room() {
    size_t active = 0;
    Client* longest_waiting = nullptr;
    for (auto& client : m_clients) {
        if (client.finished || client.evicted)
            continue;
        ++active;
        if (client.running_verb || client.request_buffered)
            continue;
        // Unread bytes may hold a whole request: the client is not idle, it is next in line.
        int unread = 0;
        if (::ioctl(client.fd.get(), FIONREAD, &unread) != 0 || unread > 0)
            continue;
        if (!longest_waiting || client.waiting_since < longest_waiting->waiting_since)
            longest_waiting = &client;
    }
    if (active < m_options.max_clients)
        return true;
    if (!longest_waiting)
        return false;
    auto const waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - longest_waiting->waiting_since);
    // Best effort, never blocking: the client is not reading, or it would not be waiting.
    auto const notice = encode_line(error_response(fmt::format(
        "kvmmd is serving {} clients: this connection, without a request for {} ms, makes room for a new one",
        m_options.max_clients, waited.count())));
    (void)::send(longest_waiting->fd.get(), notice.data(), notice.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    ::shutdown(longest_waiting->fd.get(), SHUT_RDWR);
    longest_waiting->evicted = true;
    spdlog::debug("kvmmd: closed a connection idle for {} ms to make room for a new client", waited.count());
    return true;
}

void DaemonServer::accept_loop() {
    auto last_accept_error = Clock::time_point {};
    while (true) {
        pollfd fds[2] = { { m_listener.get(), POLLIN, 0 }, { m_stop_event.fd(), POLLIN, 0 } };
        if (::poll(fds, 2, 1000) < 0 && errno != EINTR)
            return;
        join_finished_clients();
        if (fds[1].revents)
            return;
        if (!(fds[0].revents & POLLIN))
            continue;
        UniqueFd fd(::accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!fd.is_valid()) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            int const error_number = errno;
            if (Clock::now() - last_accept_error > std::chrono::seconds(10)) {
                spdlog::error("kvmmd: accept on '{}': {}; retrying", m_socket_path, std::strerror(error_number));
                last_accept_error = Clock::now();
            }
            pollfd stop { m_stop_event.fd(), POLLIN, 0 };
            (void)::poll(&stop, 1, ACCEPT_BACKOFF_MS);
            continue;
        }
        MutexLock guard(m_lock);
        if (m_stopped)
            return;
        if (!make_room()) {
            auto const refusal = encode_line(error_response(
                fmt::format("kvmmd is running or about to run a verb for each of its {} clients; try again",
                            m_options.max_clients)));
            (void)::send(fd.get(), refusal.data(), refusal.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
            continue;
        }
        auto& client = m_clients.emplace_back();
        client.fd = std::move(fd);
        client.waiting_since = Clock::now();
        client.thread = std::thread([this, &client] { serve(client); });
    }
}

void DaemonServer::serve(Client& client) {
    LineBuffer lines;
    int const fd = client.fd.get();
    // Set while part of a request line has arrived: when its first byte came.
    std::optional<Clock::time_point> request_started;
    while (true) {
        auto line = lines.next_line();
        if (!line) {
            (void)send_all(fd, encode_line(error_response(line.error().message())),
                           Clock::now() + m_options.request_timeout);
            break;
        }
        if (*line) {
            {
                MutexLock guard(m_lock);
                // Evicted between reading the line and here (make_room saw no request yet): the
                // client was told to go, so its request is not run.
                if (client.evicted)
                    break;
                client.running_verb = true;
                client.request_buffered = false;
            }
            auto request = parse_request(**line);
            auto answer = request ? m_daemon.handle(*request) : error_response(request.error().message());
            auto const answered = Clock::now();
            {
                MutexLock guard(m_lock);
                client.running_verb = false;
                client.request_buffered = lines.has_complete_line();
                client.waiting_since = answered;
            }
            request_started = lines.has_partial_line() ? std::optional(answered) : std::nullopt;
            if (!send_all(fd, encode_line(answer), answered + m_options.request_timeout))
                break;
            continue;
        }
        Clock::time_point deadline;
        {
            MutexLock guard(m_lock);
            deadline = request_started ? *request_started + m_options.request_timeout
                                       : client.waiting_since + m_options.idle_timeout;
        }
        auto const now = Clock::now();
        if (now >= deadline) {
            if (request_started)
                (void)send_all(fd,
                               encode_line(error_response(fmt::format(
                                   "the request line did not arrive whole within {} ms; closing the connection",
                                   m_options.request_timeout.count()))),
                               now + m_options.request_timeout);
            break;
        }
        pollfd entry { fd, POLLIN, 0 };
        int const ready = ::poll(&entry, 1, poll_milliseconds(deadline - now));
        if (ready < 0 && errno != EINTR)
            break;
        if (ready <= 0)
            continue;
        char buffer[65536];
        ssize_t received;
        int receive_error = 0;
        {
            // Under the lock (the read never blocks), so that make_room sees a request either
            // in the socket or in `lines`, never in between.
            MutexLock guard(m_lock);
            received = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
            receive_error = errno;
            if (received > 0) {
                lines.append(std::string_view(buffer, static_cast<size_t>(received)));
                client.request_buffered = lines.has_complete_line();
            }
        }
        if (received < 0 && (receive_error == EINTR || receive_error == EAGAIN))
            continue;
        if (received <= 0)
            break;
        if (!request_started)
            request_started = Clock::now();
    }
    MutexLock guard(m_lock);
    client.finished = true;
}

} // namespace kvmm

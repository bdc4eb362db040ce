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
#include <unistd.h>

namespace kvmm {

namespace {

int poll_milliseconds(std::chrono::steady_clock::duration left) {
    auto const milliseconds = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return static_cast<int>(std::clamp<int64_t>(milliseconds, 0, 60 * 60 * 1000));
}

// After a failed accept (EMFILE...), how long the listener rests, so that a listener that
// stays readable does not turn the accept thread into a busy loop.
constexpr std::chrono::milliseconds ACCEPT_BACKOFF { 100 };

// Clients accepted per wake-up of the accept thread, so that a stop is never kept waiting.
constexpr int ACCEPTS_PER_WAKEUP = 16;

// How often the accept thread joins the threads of clients that finished.
constexpr std::chrono::milliseconds JOIN_INTERVAL { 1000 };

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
    // The state directory's lock already keeps a second daemon off this daemon's VMs; here only
    // a live socket is told from a stale one. Accepting connections is not enough: a process
    // that inherited the listening socket (a child of a killed daemon, from before children
    // closed what they inherit) keeps it open without serving it.
    auto probe = [](std::string const& path) -> Expected<std::optional<std::string>> {
        if (auto alive = answer_on_socket(path))
            return std::optional<std::string>(fmt::format("another kvmmd is running ({})", *alive));
        return std::optional<std::string>();
    };
    // Mode 0660: root and the socket's group may manage VMs.
    auto listener = TRY(UnixListener::listen(
        socket_path, { .what = "kvmmd socket", .mode = 0660, .backlog = 128, .non_blocking = true, .probe = probe }));
    auto stop_event = TRY(EventFd::create());
    auto loop = TRY(EventLoop::create());
    std::unique_ptr<DaemonServer> server(
        new DaemonServer(std::move(listener), std::move(stop_event), std::move(loop), daemon, options));
    auto* raw = server.get();
    // The listener has an interest set so that an accept failure can park it.
    server->m_listener_registration = TRY(
        server->m_loop.watch(server->m_listener.fd(), EventLoop::READABLE, [raw](uint32_t) { raw->accept_clients(); }));
    server->m_stop_registration =
        TRY(server->m_loop.watch(server->m_stop_event.fd(), [raw] { raw->m_loop_stopping = true; }));
    server->m_accept_thread = std::thread([raw] { raw->accept_loop(); });
    return server;
}

DaemonServer::DaemonServer(UnixListener listener, EventFd stop_event, EventLoop loop, Daemon& daemon,
                           DaemonServerOptions options)
    : m_listener(std::move(listener)), m_stop_event(std::move(stop_event)), m_daemon(daemon), m_options(options),
      m_loop(std::move(loop)) {}

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
    m_listener_registration.reset();
    m_stop_registration.reset();
    m_listener.close();
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
    while (!m_loop_stopping) {
        auto wait = JOIN_INTERVAL;
        if (m_accept_paused_until) {
            auto const left = std::chrono::ceil<std::chrono::milliseconds>(*m_accept_paused_until - Clock::now());
            wait = std::clamp(left, std::chrono::milliseconds(0), wait);
        }
        auto ran = m_loop.run_once(wait);
        if (!ran) {
            spdlog::error("kvmmd: the accept thread stops: {}", ran.error().message());
            return;
        }
        join_finished_clients();
        if (m_accept_paused_until && Clock::now() >= *m_accept_paused_until) {
            m_accept_paused_until.reset();
            if (!m_listener_registration.modify(EventLoop::READABLE))
                pause_accepting(); // try again later rather than never
        }
    }
}

void DaemonServer::pause_accepting() {
    (void)m_listener_registration.modify(0);
    m_accept_paused_until = Clock::now() + ACCEPT_BACKOFF;
}

void DaemonServer::accept_clients() {
    for (int accepted = 0; accepted < ACCEPTS_PER_WAKEUP; ++accepted) {
        // Client sockets block (the listener does not, so that the loop never waits in accept).
        UniqueFd fd(::accept4(m_listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!fd.is_valid()) {
            int const error_number = errno;
            if (error_number == EAGAIN || error_number == EWOULDBLOCK)
                return;
            if (error_number == EINTR || error_number == ECONNABORTED)
                continue;
            if (Clock::now() - m_last_accept_error > std::chrono::seconds(10)) {
                spdlog::error("kvmmd: accept on '{}': {}; retrying", m_listener.path(), std::strerror(error_number));
                m_last_accept_error = Clock::now();
            }
            pause_accepting();
            return;
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

#include "api/api_server.h"

#include "base/rate_limited_log.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <pthread.h>

namespace kvmm {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Where a connection is in its request cycle; it decides which deadline applies and whether the
// slot may be given to a new client.
enum class Phase {
    Idle,       // no request in progress: new, or kept alive after a response
    Reading,    // part of a request has arrived (any 100 Continue sent is part of this phase)
    Responding, // a response is queued and the client has not read all of it yet
};

struct Connection {
    UniqueFd fd;
    EventLoop::Registration registration; // after `fd`: leaves the loop before the fd is closed
    HttpRequestParser parser;
    std::string output;
    bool closing { false };           // close once `output` is sent
    bool request_completed { false }; // a request was answered since the phase was last updated
    Phase phase { Phase::Idle };
    SteadyClock::time_point idle_since;
    SteadyClock::time_point request_started; // the first byte of the request in progress, while Reading
    SteadyClock::time_point deadline;        // the connection is closed when this passes
};

} // namespace

class ApiServer::Loop {
public:
    Loop(ApiHandler& handler, ApiServerOptions options, EventLoop loop)
        : m_handler(handler), m_options(std::move(options)), m_loop(std::move(loop)),
          m_accept_failures(std::chrono::seconds(10)) {}

    // On the owning thread, before the server thread starts, so that a failure is start()'s
    // error rather than a thread that silently ends.
    Expected<void> watch(int listener, int stop_fd);
    EventLoop& event_loop() { return m_loop; }
    void run();

private:
    void accept_clients();
    bool make_room();
    Connection* longest_idle();
    Connection* oldest_slow_request(SteadyClock::time_point now);
    void answer_timeout(Connection const& connection);
    void on_ready(int fd, uint32_t ready);
    void on_readable(Connection& connection);
    void process(Connection& connection);
    void flush(Connection& connection);
    void update_interest(Connection& connection);
    void update_phase(Connection& connection);
    void expire(SteadyClock::time_point now);
    std::chrono::milliseconds wait_timeout(SteadyClock::time_point now) const;
    void pause_accepting(int error_number);
    void resume_accepting_if_due(SteadyClock::time_point now);
    void close(int fd);

    ApiHandler& m_handler;
    ApiServerOptions m_options;
    EventLoop m_loop;
    int m_listener { -1 };
    bool m_stopping { false };
    std::optional<SteadyClock::time_point> m_accept_paused_until; // the listener is parked until then
    RateLimitedLog m_accept_failures;
    // Declared after m_loop: connections (and their registrations) go before the loop does.
    EventLoop::Registration m_listener_registration;
    EventLoop::Registration m_stop_registration;
    std::map<int, std::unique_ptr<Connection>> m_connections;
};

Expected<void> ApiServer::Loop::watch(int listener, int stop_fd) {
    m_listener = listener;
    // The listener has an interest set so that an accept failure can park it (pause_accepting).
    m_listener_registration = TRY(m_loop.watch(listener, EventLoop::READABLE, [this](uint32_t) { accept_clients(); }));
    m_stop_registration = TRY(m_loop.watch(stop_fd, [this] { m_stopping = true; }));
    return {};
}

void ApiServer::Loop::run() {
    while (!m_stopping) {
        auto ran = m_loop.run_once(wait_timeout(SteadyClock::now()));
        if (!ran) {
            spdlog::error("API server: {}", ran.error().message());
            return;
        }
        auto const now = SteadyClock::now();
        expire(now);
        resume_accepting_if_due(now);
    }
}

void ApiServer::Loop::on_ready(int fd, uint32_t ready) {
    auto found = m_connections.find(fd);
    if (found == m_connections.end())
        return;
    Connection& connection = *found->second;
    if (ready & EventLoop::WRITABLE)
        flush(connection);
    if (m_connections.count(fd) && (ready & EventLoop::READABLE))
        on_readable(connection);
}

// Time until the nearest connection deadline or accept retry (rounded up, so the loop never
// wakes just before one and spins); -1 (no timeout) when there is none.
std::chrono::milliseconds ApiServer::Loop::wait_timeout(SteadyClock::time_point now) const {
    std::optional<SteadyClock::time_point> nearest = m_accept_paused_until;
    for (auto const& [fd, connection] : m_connections) {
        if (!nearest || connection->deadline < *nearest)
            nearest = connection->deadline;
    }
    if (!nearest)
        return std::chrono::milliseconds(-1);
    if (*nearest <= now)
        return std::chrono::milliseconds(0);
    auto const wait = std::chrono::ceil<std::chrono::milliseconds>(*nearest - now).count();
    return std::chrono::milliseconds(std::min<int64_t>(wait, std::numeric_limits<int>::max()));
}

// At most ACCEPTS_PER_WAKEUP clients per call: a stream of new connections (each answered 503
// while every slot is busy) must not keep this thread from the clients it already serves. The
// listener is level-triggered, so epoll reports it again with the rest.
void ApiServer::Loop::accept_clients() {
    for (int accepted = 0; accepted < ACCEPTS_PER_WAKEUP && !m_accept_paused_until; ++accepted) {
        UniqueFd client(::accept4(m_listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!client.is_valid()) {
            int const error_number = errno;
            if (error_number == EAGAIN || error_number == EWOULDBLOCK)
                return;
            // A client that gave up while queued, or a signal: the next one may be fine.
            if (error_number == EINTR || error_number == ECONNABORTED)
                continue; // counts towards the bound: an aborting stream must not spin here either
            // Out of descriptors, socket buffers or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or an
            // error this server does not expect: the client stays queued and the listener
            // readable, so retrying at once would spin.
            pause_accepting(error_number);
            return;
        }
        if (m_connections.size() >= m_options.max_connections && !make_room()) {
            // Best effort: a fresh socket buffer always has room for this short answer.
            auto busy = serialize_response(
                HttpResponse::fault(503, fmt::format("too many API requests in progress (limit {} connections)",
                                                     m_options.max_connections)),
                false);
            [[maybe_unused]] auto sent = ::send(client.get(), busy.data(), busy.size(), MSG_NOSIGNAL);
            continue;
        }
        auto const now = SteadyClock::now();
        auto connection = std::make_unique<Connection>();
        connection->parser = HttpRequestParser(m_options.limits);
        connection->idle_since = now;
        connection->deadline = now + m_options.idle_timeout;
        int fd = client.get();
        auto registration = m_loop.watch(fd, EventLoop::READABLE, [this, fd](uint32_t ready) { on_ready(fd, ready); });
        if (!registration)
            continue;
        connection->fd = std::move(client);
        connection->registration = std::move(*registration);
        m_connections.emplace(fd, std::move(connection));
    }
}

// At the cap: closes a connection to give its slot to a new client. First choice is the one
// idle the longest, so a new client is never refused while idle keep-alive connections hold
// slots. Failing that, the request in progress the longest, if it started more than
// `slow_request_grace` ago: it is answered 408 and closed, so clients that trickle request after
// request, each inside its deadline, cannot keep every slot for ever. False when every slot has a
// young request in progress or a response still to be read: the new client gets 503. (A later
// event of the same epoll batch for the closed fd may reach a new connection that reuses its
// number; readiness is only a hint and every operation here is non-blocking, so that costs at
// most an EAGAIN.)
bool ApiServer::Loop::make_room() {
    if (Connection* idle = longest_idle()) {
        spdlog::debug("API server: closing the longest-idle connection to make room for a new client");
        close(idle->fd.get());
        return true;
    }
    if (Connection* slow = oldest_slow_request(SteadyClock::now())) {
        spdlog::debug("API server: closing the connection whose request has been arriving the longest to make room "
                      "for a new client");
        answer_timeout(*slow);
        close(slow->fd.get());
        return true;
    }
    return false;
}

// The connection idle the longest. A connection whose next request is already in its socket
// buffer is not idle, even if this thread has not read it yet.
Connection* ApiServer::Loop::longest_idle() {
    Connection* oldest = nullptr;
    for (auto const& [fd, connection] : m_connections) {
        if (connection->phase != Phase::Idle || (oldest && oldest->idle_since <= connection->idle_since))
            continue;
        int pending = 0;
        if (::ioctl(fd, FIONREAD, &pending) == 0 && pending > 0)
            continue;
        oldest = connection.get();
    }
    return oldest;
}

// The connection whose request has been arriving the longest, if that is longer than the grace.
Connection* ApiServer::Loop::oldest_slow_request(SteadyClock::time_point now) {
    Connection* oldest = nullptr;
    for (auto const& [fd, connection] : m_connections) {
        if (connection->phase != Phase::Reading || now - connection->request_started < m_options.slow_request_grace)
            continue;
        if (!oldest || connection->request_started < oldest->request_started)
            oldest = connection.get();
    }
    return oldest;
}

// Tells a client whose request is being cut off why, as RFC 9110 section 15.5.9 describes.
// Best effort, as for 503; only when nothing else is queued for it, since a 408 in the middle of
// another response would be garbage to the client.
void ApiServer::Loop::answer_timeout(Connection const& connection) {
    if (connection.phase != Phase::Reading || !connection.output.empty())
        return;
    auto timeout = serialize_response(HttpResponse::fault(408, fmt::format("the request was not complete within {} ms",
                                                                           m_options.request_deadline.count())),
                                      false);
    [[maybe_unused]] auto sent =
        ::send(connection.fd.get(), timeout.data(), timeout.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void ApiServer::Loop::pause_accepting(int error_number) {
    m_accept_failures.warn("API server: cannot accept a client: {}; retrying in {} ms", std::strerror(error_number),
                           m_options.accept_retry_delay.count());
    (void)m_listener_registration.modify(0); // parked: not polled until the retry
    m_accept_paused_until = SteadyClock::now() + m_options.accept_retry_delay;
}

void ApiServer::Loop::resume_accepting_if_due(SteadyClock::time_point now) {
    if (!m_accept_paused_until || now < *m_accept_paused_until)
        return;
    m_accept_paused_until.reset();
    if (auto resumed = m_listener_registration.modify(EventLoop::READABLE); !resumed)
        pause_accepting(resumed.error().error_number()); // e.g. ENOMEM: try again later rather than never
}

void ApiServer::Loop::on_readable(Connection& connection) {
    int const fd = connection.fd.get();
    char buffer[16 * 1024];
    while (!connection.closing) {
        ssize_t received = ::recv(fd, buffer, sizeof(buffer), 0);
        if (received < 0 && errno == EINTR)
            continue;
        if (received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (received <= 0) {
            // Peer closed (or failed): whatever it had half-sent is discarded.
            close(fd);
            return;
        }
        if (connection.phase == Phase::Idle) {
            // The first byte of a request starts its deadline; later bytes do not extend it.
            connection.phase = Phase::Reading;
            connection.request_started = SteadyClock::now();
            connection.deadline = connection.request_started + m_options.request_deadline;
        }
        connection.parser.feed(std::string_view(buffer, static_cast<size_t>(received)));
        process(connection);
        if (!m_connections.count(fd))
            return;
        // Stop reading while a response is backed up: the client is not reading either.
        if (!connection.output.empty())
            break;
    }
    flush(connection);
}

void ApiServer::Loop::process(Connection& connection) {
    auto& parser = connection.parser;
    while (!connection.closing) {
        auto result = parser.feed({});
        if (result == HttpRequestParser::Result::Error) {
            connection.output +=
                serialize_response(HttpResponse::fault(parser.error_status(), parser.error_message()), false);
            connection.closing = true;
            break;
        }
        if (result == HttpRequestParser::Result::NeedMore) {
            if (parser.take_continue_pending())
                connection.output += HTTP_CONTINUE_RESPONSE;
            break;
        }
        HttpRequest request = parser.take_request();
        HttpResponse response = m_handler.handle(request);
        bool const keep_alive = request.keep_alive && !response.close_connection;
        connection.output += serialize_response(response, keep_alive);
        connection.request_completed = true;
        connection.closing = !keep_alive;
    }
}

void ApiServer::Loop::flush(Connection& connection) {
    int const fd = connection.fd.get();
    while (!connection.output.empty()) {
        ssize_t sent = ::send(fd, connection.output.data(), connection.output.size(), MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (sent < 0) {
            close(fd);
            return;
        }
        connection.output.erase(0, static_cast<size_t>(sent));
    }
    if (connection.output.empty() && connection.closing) {
        close(fd);
        return;
    }
    update_phase(connection);
    update_interest(connection);
}

// Moves the connection to the phase its buffers show and starts that phase's deadline. A phase
// that goes on (more bytes of the same request, more of the same response sent) keeps its
// deadline, so trickling bytes buys a client nothing; an answered request starts a new one.
// The response phase gets its own deadline because the handler's time is not the client's.
void ApiServer::Loop::update_phase(Connection& connection) {
    Phase const next = connection.parser.has_partial_request() ? Phase::Reading
                       : !connection.output.empty()            ? Phase::Responding
                                                               : Phase::Idle;
    if (next == connection.phase && !connection.request_completed)
        return;
    auto const now = SteadyClock::now();
    connection.phase = next;
    connection.request_completed = false;
    if (next == Phase::Idle) {
        connection.idle_since = now;
        connection.deadline = now + m_options.idle_timeout;
    } else {
        // A request pipelined behind the one answered starts now, as far as anyone can tell.
        if (next == Phase::Reading)
            connection.request_started = now;
        connection.deadline = now + m_options.request_deadline;
    }
}

// Reads while nothing is queued for the client; otherwise waits until it takes the response (a
// hang-up is reported either way, and the next send or recv finds it).
void ApiServer::Loop::update_interest(Connection& connection) {
    (void)connection.registration.modify(connection.output.empty() ? EventLoop::READABLE : EventLoop::WRITABLE);
}

void ApiServer::Loop::expire(SteadyClock::time_point now) {
    for (auto it = m_connections.begin(); it != m_connections.end();) {
        Connection const& connection = *it->second;
        if (now < connection.deadline) {
            ++it;
            continue;
        }
        // A response that was not read in time is not followed by a 408: the client has not
        // read what is queued, so it would not read that either.
        answer_timeout(connection);
        spdlog::debug("API server: closing a connection {}", connection.phase == Phase::Idle ? "idle for too long"
                                                             : connection.phase == Phase::Reading
                                                                 ? "whose request is past its deadline"
                                                                 : "that did not read its response in time");
        it = m_connections.erase(it); // ends its registration, then closes the fd
    }
}

void ApiServer::Loop::close(int fd) { m_connections.erase(fd); }

ApiServer::ApiServer(UnixListener listener, EventFd stop_event, std::unique_ptr<Loop> loop,
                     std::function<void()> detach_from_loop)
    : m_socket_path(listener.path()), m_listener(std::move(listener)), m_stop_event(std::move(stop_event)),
      m_loop(std::move(loop)), m_detach_from_loop(std::move(detach_from_loop)) {}

Expected<std::unique_ptr<ApiServer>> ApiServer::start(std::string const& socket_path, ApiHandler& handler,
                                                      ApiServerOptions options) {
    // Mode 0600: the API controls the VM, so only its owner may connect.
    auto listener = TRY(
        UnixListener::listen(socket_path, { .what = "API socket", .mode = 0600, .backlog = 64, .non_blocking = true }));
    auto stop_event = TRY(EventFd::create());
    auto event_loop = TRY(EventLoop::create().with_context("the API server's event loop"));
    auto attach = std::move(options.attach_to_loop);
    auto detach = std::move(options.detach_from_loop);
    auto on_thread_start = std::move(options.on_thread_start);
    auto loop = std::make_unique<Loop>(handler, std::move(options), std::move(event_loop));
    TRY(loop->watch(listener.fd(), stop_event.fd()));
    if (attach)
        TRY(attach(loop->event_loop()));
    std::unique_ptr<ApiServer> server(
        new ApiServer(std::move(listener), std::move(stop_event), std::move(loop), std::move(detach)));
    server->m_thread = std::thread([loop = server->m_loop.get(), on_thread_start = std::move(on_thread_start)] {
        pthread_setname_np(pthread_self(), "api");
        if (on_thread_start)
            on_thread_start();
        loop->run();
    });
    return server;
}

ApiServer::~ApiServer() { stop(); }

void ApiServer::stop() {
    if (!m_thread.joinable())
        return;
    if (!m_stop_event.signal())
        spdlog::error("API server: cannot signal the server thread to stop");
    m_thread.join();
    if (m_detach_from_loop)
        m_detach_from_loop();
    m_loop.reset(); // closes every connection
    // Removes the socket file only if it is still the one this server created.
    m_listener.close();
}

} // namespace kvmm

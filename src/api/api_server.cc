#include "api/api_server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

namespace kvmm {
namespace {

using Clock = std::chrono::steady_clock;

Expected<sockaddr_un> unix_address(std::string const& path) {
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(address.sun_path))
        return Error::format("API socket path '{}' must be 1 to {} bytes long", path, sizeof(address.sun_path) - 1);
    std::memcpy(address.sun_path, path.data(), path.size());
    return address;
}

// Removes `path` if it is a socket nobody listens on (left by a process that died); refuses
// to touch anything else.
Expected<void> remove_stale_socket(std::string const& path, sockaddr_un const& address) {
    struct stat status {};
    if (::lstat(path.c_str(), &status) != 0) {
        if (errno == ENOENT)
            return {};
        return Error::from_errno(fmt::format("API socket path '{}'", path));
    }
    if (!S_ISSOCK(status.st_mode))
        return Error::format("API socket path '{}' exists and is not a socket", path);
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe.is_valid())
        return Error::from_errno("socket(AF_UNIX)");
    if (::connect(probe.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) == 0)
        return Error::format("API socket '{}' is in use by another process", path);
    if (errno != ECONNREFUSED)
        return Error::from_errno(fmt::format("probing API socket '{}'", path));
    if (::unlink(path.c_str()) != 0)
        return Error::from_errno(fmt::format("removing stale API socket '{}'", path));
    return {};
}

struct Connection {
    UniqueFd fd;
    HttpRequestParser parser;
    std::string output;
    bool closing { false }; // close once `output` is sent
    bool served { false };  // at least one response was sent: idle keep-alive is legitimate
    Clock::time_point last_activity;
};

} // namespace

class ApiServer::Loop {
public:
    Loop(ApiHandler& handler, ApiServerOptions options) : m_handler(handler), m_options(options) {}

    void run(int listener, int stop_fd);

private:
    void accept_clients(int listener);
    void on_readable(Connection& connection);
    void process(Connection& connection);
    void flush(Connection& connection);
    void update_interest(Connection& connection);
    void drop_expired();
    void close(int fd);

    ApiHandler& m_handler;
    ApiServerOptions m_options;
    UniqueFd m_epoll;
    std::map<int, std::unique_ptr<Connection>> m_connections;
};

void ApiServer::Loop::run(int listener, int stop_fd) {
    m_epoll = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!m_epoll.is_valid()) {
        spdlog::error("API server: epoll_create1: {}", std::strerror(errno));
        return;
    }
    for (int fd : { listener, stop_fd }) {
        epoll_event event { .events = EPOLLIN, .data = { .fd = fd } };
        ::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &event);
    }
    // Wake often enough to enforce the request timeout with a quarter of it as slack.
    int const tick_ms = static_cast<int>(std::max<int64_t>(1, m_options.request_timeout.count() / 4));
    epoll_event events[32];
    while (true) {
        int count = ::epoll_wait(m_epoll.get(), events, 32, m_connections.empty() ? -1 : tick_ms);
        if (count < 0 && errno != EINTR) {
            spdlog::error("API server: epoll_wait: {}", std::strerror(errno));
            return;
        }
        for (int i = 0; i < count; ++i) {
            int fd = events[i].data.fd;
            if (fd == stop_fd)
                return;
            if (fd == listener) {
                accept_clients(listener);
                continue;
            }
            auto it = m_connections.find(fd);
            if (it == m_connections.end())
                continue;
            Connection& connection = *it->second;
            if (events[i].events & EPOLLOUT)
                flush(connection);
            if (m_connections.count(fd) && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_readable(connection);
        }
        drop_expired();
    }
}

void ApiServer::Loop::accept_clients(int listener) {
    while (true) {
        UniqueFd client(::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!client.is_valid())
            return; // EAGAIN, or an error on one pending client: nothing to do for it
        if (m_connections.size() >= m_options.max_connections) {
            // Best effort: a fresh socket buffer always has room for this short answer.
            auto busy = serialize_response(HttpResponse::fault(503, fmt::format("too many API connections (limit {})",
                                                                                m_options.max_connections)),
                                           false);
            [[maybe_unused]] auto sent = ::send(client.get(), busy.data(), busy.size(), MSG_NOSIGNAL);
            continue;
        }
        auto connection = std::make_unique<Connection>();
        connection->parser = HttpRequestParser(m_options.limits);
        connection->last_activity = Clock::now();
        int fd = client.get();
        epoll_event event { .events = EPOLLIN | EPOLLRDHUP, .data = { .fd = fd } };
        if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &event) != 0)
            continue;
        connection->fd = std::move(client);
        m_connections.emplace(fd, std::move(connection));
    }
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
        connection.last_activity = Clock::now();
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
        connection.served = true;
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
        connection.last_activity = Clock::now();
    }
    if (connection.output.empty() && connection.closing) {
        close(fd);
        return;
    }
    update_interest(connection);
}

void ApiServer::Loop::update_interest(Connection& connection) {
    epoll_event event { .events = connection.output.empty() ? uint32_t(EPOLLIN | EPOLLRDHUP) : uint32_t(EPOLLOUT),
                        .data = { .fd = connection.fd.get() } };
    ::epoll_ctl(m_epoll.get(), EPOLL_CTL_MOD, connection.fd.get(), &event);
}

void ApiServer::Loop::drop_expired() {
    auto const now = Clock::now();
    for (auto it = m_connections.begin(); it != m_connections.end();) {
        Connection const& connection = *it->second;
        bool const waiting =
            connection.parser.has_partial_request() || !connection.output.empty() || !connection.served;
        if (waiting && now - connection.last_activity > m_options.request_timeout) {
            spdlog::debug("API server: dropping a connection idle for more than {} ms mid-request",
                          m_options.request_timeout.count());
            it = m_connections.erase(it); // closes the fd, which also removes it from epoll
        } else {
            ++it;
        }
    }
}

void ApiServer::Loop::close(int fd) { m_connections.erase(fd); }

ApiServer::ApiServer(std::string socket_path, UniqueFd listener, EventFd stop_event, ino_t inode, dev_t device)
    : m_socket_path(std::move(socket_path)), m_listener(std::move(listener)), m_stop_event(std::move(stop_event)),
      m_inode(inode), m_device(device) {}

Expected<std::unique_ptr<ApiServer>> ApiServer::start(std::string const& socket_path, ApiHandler& handler,
                                                      ApiServerOptions options) {
    sockaddr_un address = TRY(unix_address(socket_path));
    TRY(remove_stale_socket(socket_path, address));
    UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener.is_valid())
        return Error::from_errno("socket(AF_UNIX)");
    // Linux gives the socket file the socket inode's mode (minus umask) at bind(), so setting it
    // first leaves no window in which others could connect.
    if (::fchmod(listener.get(), 0600) != 0)
        return Error::from_errno("fchmod(API socket)");
    if (::bind(listener.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0)
        return Error::from_errno(fmt::format("binding API socket '{}'", socket_path));
    struct stat status {};
    if (::chmod(socket_path.c_str(), 0600) != 0 || ::stat(socket_path.c_str(), &status) != 0) {
        auto error = Error::from_errno(fmt::format("API socket '{}'", socket_path));
        ::unlink(socket_path.c_str());
        return error;
    }
    if (::listen(listener.get(), 64) != 0) {
        auto error = Error::from_errno(fmt::format("listening on API socket '{}'", socket_path));
        ::unlink(socket_path.c_str());
        return error;
    }
    auto stop_event = EventFd::create();
    if (!stop_event) {
        ::unlink(socket_path.c_str());
        return stop_event.release_error();
    }
    std::unique_ptr<ApiServer> server(
        new ApiServer(socket_path, std::move(listener), stop_event.release_value(), status.st_ino, status.st_dev));
    server->m_thread =
        std::thread([&handler, options, listener_fd = server->m_listener.get(), stop_fd = server->m_stop_event.fd()] {
            Loop loop(handler, options);
            loop.run(listener_fd, stop_fd);
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
    m_listener.reset();
    // Only unlink the file this server created, not one that replaced it meanwhile.
    struct stat status {};
    if (::lstat(m_socket_path.c_str(), &status) == 0 && status.st_ino == m_inode && status.st_dev == m_device)
        ::unlink(m_socket_path.c_str());
}

} // namespace kvmm

#include "manager/daemon_server.h"

#include "manager/protocol.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace kvmm {

Expected<std::unique_ptr<DaemonServer>> DaemonServer::start(std::string const& socket_path, Daemon& daemon,
                                                            size_t max_clients) {
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof(address.sun_path))
        return Error::format("socket path '{}' must be 1 to {} bytes long", socket_path, sizeof(address.sun_path) - 1);
    std::memcpy(address.sun_path, socket_path.data(), socket_path.size());
    struct stat existing {};
    if (::lstat(socket_path.c_str(), &existing) == 0) {
        if (!S_ISSOCK(existing.st_mode))
            return Error::format("'{}' exists and is not a socket", socket_path);
        if (connect_unix_socket(socket_path))
            return Error::format("'{}' is in use: another kvmmd is running", socket_path);
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
        new DaemonServer(socket_path, std::move(listener), std::move(stop_event), daemon, max_clients, status.st_ino));
    server->m_accept_thread = std::thread([raw = server.get()] { raw->accept_loop(); });
    return server;
}

DaemonServer::DaemonServer(std::string socket_path, UniqueFd listener, EventFd stop_event, Daemon& daemon,
                           size_t max_clients, ino_t inode)
    : m_socket_path(std::move(socket_path)), m_listener(std::move(listener)), m_stop_event(std::move(stop_event)),
      m_daemon(daemon), m_max_clients(max_clients), m_inode(inode) {}

DaemonServer::~DaemonServer() { stop(); }

void DaemonServer::stop() {
    {
        std::lock_guard guard(m_lock);
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
        std::lock_guard guard(m_lock);
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
        std::lock_guard guard(m_lock);
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

void DaemonServer::accept_loop() {
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
        if (!fd.is_valid())
            continue;
        std::lock_guard guard(m_lock);
        if (m_stopped)
            return;
        if (m_clients.size() >= m_max_clients) {
            (void)send_all(fd.get(),
                           encode_line(error_response(
                               fmt::format("kvmmd is serving {} clients already; try again", m_max_clients))));
            continue;
        }
        auto& client = m_clients.emplace_back();
        client.fd = std::move(fd);
        client.thread = std::thread([this, &client] { serve(client); });
    }
}

void DaemonServer::serve(Client& client) {
    LineBuffer lines;
    int const fd = client.fd.get();
    while (true) {
        auto line = lines.next_line();
        if (!line) {
            (void)send_all(fd, encode_line(error_response(line.error().message())));
            break;
        }
        if (*line) {
            auto request = parse_request(**line);
            auto answer = request ? m_daemon.handle(*request) : error_response(request.error().message());
            if (!send_all(fd, encode_line(answer)))
                break;
            continue;
        }
        char buffer[65536];
        ssize_t const received = ::recv(fd, buffer, sizeof(buffer), 0);
        if (received < 0 && errno == EINTR)
            continue;
        if (received <= 0)
            break;
        lines.append(std::string_view(buffer, static_cast<size_t>(received)));
    }
    std::lock_guard guard(m_lock);
    client.finished = true;
}

} // namespace kvmm

// VsockDevice, host side: the listener, clients sending their CONNECT line, host-socket
// readiness and the device's timer (handshake and response deadlines, accept back-off).
// Everything here runs on the event-loop thread (see vsock_device.h).
#include "devices/virtio/vsock/vsock_device.h"

#include "devices/virtio/vsock/vsock_host_socket.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <vector>

namespace kvmm::virtio::vsock {

namespace {

// How many clients one listener wake-up accepts, so a connect storm cannot hold the loop; the
// level-triggered listener comes back in the next round for the rest.
constexpr int MAX_ACCEPTS_PER_WAKEUP = 16;

} // namespace

void VsockDevice::on_listener_readable() {
    for (int i = 0; i < MAX_ACCEPTS_PER_WAKEUP; ++i) {
        int const fd = ::accept4(m_listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int const error = errno;
            if (error == EAGAIN || error == EWOULDBLOCK || error == EINTR || error == ECONNABORTED)
                return;
            // Out of fds (EMFILE, ENFILE) or memory: the pending client stays in the backlog
            // and the listener stays readable, so retrying at once would spin the loop.
            ++m_accept_errors;
            m_host_log.warn("virtio-vsock cid {}: accept on '{}': {}; not accepting for {} ms", m_guest_cid, m_uds_path,
                            std::strerror(error), m_limits.accept_backoff.count());
            if (auto parked = m_event_loop.modify(m_listener.get(), 0); !parked) {
                spdlog::warn("virtio-vsock cid {}: {}", m_guest_cid, parked.error().message());
                return;
            }
            m_listener_resume = Clock::now() + m_limits.accept_backoff;
            arm_timer(*m_listener_resume);
            return;
        }
        accept_client(UniqueFd(fd));
    }
}

void VsockDevice::accept_client(UniqueFd stream) {
    if (!active()) {
        ++m_connections_refused; // closed at once: there is no driver to ask
        return;
    }
    // At the handshake cap the newcomer takes the place of the client that has been silent the
    // longest: one that talks straight after connecting (every real client) still gets through a
    // silent crowd. That client is dropped only once the newcomer is known to be kept (within
    // the host cap, counting the place it frees, and registered), never for a newcomer that is
    // then refused.
    bool const takes_a_silent_clients_place = m_handshakes.size() >= m_limits.handshakes && !m_handshakes.empty();
    size_t const host_side = m_host_connection_count + m_handshakes.size() - (takes_a_silent_clients_place ? 1 : 0);
    if (host_side >= m_limits.host_connections) {
        ++m_connections_refused;
        ++m_host_connections_over_limit;
        m_host_log.warn("virtio-vsock cid {}: client of '{}' refused: {} host connections open", m_guest_cid,
                        m_uds_path, host_side);
        return;
    }
    int const fd = stream.get();
    if (auto added = m_event_loop.add(fd, [this, fd] { on_handshake_readable(fd); }); !added) {
        ++m_connections_refused;
        spdlog::warn("virtio-vsock cid {}: {}", m_guest_cid, added.error().message());
        return; // `stream` closes the unregistered socket
    }
    if (takes_a_silent_clients_place) {
        auto const oldest =
            std::min_element(m_handshakes.begin(), m_handshakes.end(),
                             [](auto const& a, auto const& b) { return a.second.deadline < b.second.deadline; });
        ++m_handshakes_evicted;
        m_host_log.warn("virtio-vsock cid {}: {} clients of '{}' have not sent their CONNECT line; dropping the oldest",
                        m_guest_cid, m_handshakes.size(), m_uds_path);
        close_handshake(oldest->first);
    }
    auto const deadline = Clock::now() + m_limits.handshake_timeout;
    m_handshakes.emplace(fd, Handshake { std::move(stream), {}, deadline });
    arm_timer(deadline);
    // The line usually arrives with the connection: read it now rather than a round later.
    on_handshake_readable(fd);
}

void VsockDevice::on_handshake_readable(int fd) {
    auto found = m_handshakes.find(fd);
    if (found == m_handshakes.end())
        return;
    Handshake& handshake = found->second;
    // One byte at a time: whatever follows the newline is stream data for the guest and must
    // stay in the socket. At most MAX_CONNECT_LINE + 1 bytes per call.
    while (true) {
        char byte;
        ssize_t const got = ::recv(fd, &byte, 1, MSG_DONTWAIT);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (got <= 0) {
            close_handshake(fd); // the client went away before finishing its line
            return;
        }
        if (byte == '\n')
            break;
        if (handshake.line.size() >= MAX_CONNECT_LINE) {
            m_host_log.warn("virtio-vsock cid {}: host client sent more than {} bytes without a newline", m_guest_cid,
                            MAX_CONNECT_LINE);
            close_handshake(fd);
            return;
        }
        handshake.line.push_back(byte);
    }
    auto const port = parse_connect_line(handshake.line);
    if (!port || !active()) {
        if (!port)
            m_host_log.warn("virtio-vsock cid {}: host client sent '{}', expected 'CONNECT <port>'", m_guest_cid,
                            handshake.line);
        ++m_connections_refused;
        close_handshake(fd);
        return;
    }
    start_host_connection(fd, *port);
}

void VsockDevice::start_host_connection(int fd, uint32_t guest_port) {
    auto found = m_handshakes.find(fd);
    UniqueFd stream = std::move(found->second.stream);
    m_event_loop.remove(fd);
    m_handshakes.erase(found);
    // From here on every failure path lets `stream` (or the Connection owning it) close the
    // socket while it is registered nowhere.
    auto const host_port = allocate_host_port(guest_port);
    if (!host_port) {
        ++m_connections_refused;
        return;
    }
    ConnectionKey const key { *host_port, guest_port };
    auto connection = std::make_unique<Connection>(std::move(stream), key, Connection::State::AwaitingResponse);
    connection->host_initiated = true;
    connection->pending_control |= PENDING_REQUEST;
    connection->response_deadline = Clock::now() + m_limits.handshake_timeout;
    auto const deadline = connection->response_deadline;
    if (!register_connection(std::move(connection))) {
        ++m_connections_refused;
        return;
    }
    arm_timer(deadline);
    refresh(*m_connections.at(key));
    schedule_rx();
}

std::optional<uint32_t> VsockDevice::allocate_host_port(uint32_t guest_port) {
    // A guest may connect to any host port, including ones in our range, so the next port may
    // already form a live key with this guest port. Each live connection blocks at most one
    // candidate, so this ends within size() + 1 tries.
    for (size_t tries = 0; tries <= m_connections.size(); ++tries) {
        uint32_t const candidate = m_next_host_port;
        // Wraps back to the start of the range after 3 * 2^30 connections.
        m_next_host_port = candidate == UINT32_MAX ? FIRST_HOST_PORT : candidate + 1;
        if (!m_connections.contains(ConnectionKey { candidate, guest_port }))
            return candidate;
        ++m_host_port_collisions;
    }
    return std::nullopt;
}

void VsockDevice::close_handshake(int fd) {
    m_event_loop.remove(fd);
    m_handshakes.erase(fd);
}

void VsockDevice::on_connection_ready(ConnectionKey key, uint32_t ready) {
    auto found = m_connections.find(key);
    if (found == m_connections.end())
        return;
    Connection& connection = *found->second;
    // Writing is bounded by what the connection holds (Connection::BUFFER_SIZE). Reading the
    // host socket into the guest happens in process_rx, within its budget: here the connection
    // only takes its turn (refresh() parks the fd until then).
    if ((ready & EventLoop::WRITABLE) && !write_to_host(connection)) {
        schedule_rx(); // deliver the RST
        return;
    }
    if (ready & EventLoop::READABLE)
        connection.host_readable = true;
    refresh(connection);
    schedule_rx();
}

void VsockDevice::arm_timer(Clock::time_point deadline) {
    if (m_timer_deadline && *m_timer_deadline <= deadline)
        return;
    // A zero it_value would disarm the timer: a deadline already past fires after 1 ns.
    auto const delay = std::max<Clock::duration>(deadline - Clock::now(), std::chrono::nanoseconds(1));
    auto const nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(delay).count();
    itimerspec setting {};
    setting.it_value.tv_sec = static_cast<time_t>(nanoseconds / 1'000'000'000);
    setting.it_value.tv_nsec = static_cast<long>(nanoseconds % 1'000'000'000);
    if (::timerfd_settime(m_timer.get(), 0, &setting, nullptr) != 0) {
        spdlog::error("virtio-vsock cid {}: timerfd_settime: {}", m_guest_cid, std::strerror(errno));
        return;
    }
    m_timer_deadline = deadline;
}

void VsockDevice::on_timer() {
    uint64_t expirations = 0;
    (void)::read(m_timer.get(), &expirations, sizeof(expirations));
    m_timer_deadline.reset();
    auto const now = Clock::now();
    std::optional<Clock::time_point> next;
    auto const wait_for = [&next](Clock::time_point deadline) {
        if (!next || deadline < *next)
            next = deadline;
    };

    // Clients that never sent their CONNECT line.
    for (auto it = m_handshakes.begin(); it != m_handshakes.end();) {
        auto const current = it++;
        if (current->second.deadline > now) {
            wait_for(current->second.deadline);
            continue;
        }
        ++m_handshakes_timed_out;
        m_host_log.warn("virtio-vsock cid {}: dropped a client of '{}' that sent no CONNECT line within {} ms",
                        m_guest_cid, m_uds_path, m_limits.handshake_timeout.count());
        close_handshake(current->first);
    }

    // Host-initiated connections whose REQUEST the guest never answered: the client gets
    // end of stream, the guest an RST (in case its RESPONSE is still coming).
    std::vector<ConnectionKey> expired;
    for (auto const& [key, connection] : m_connections) {
        if (!connection->host_initiated || connection->state() != Connection::State::AwaitingResponse)
            continue;
        if (connection->response_deadline <= now)
            expired.push_back(key);
        else
            wait_for(connection->response_deadline);
    }
    for (auto const& key : expired) {
        ++m_host_requests_timed_out;
        m_host_log.warn("virtio-vsock cid {}: the guest did not answer a connection to its port {} within {} ms",
                        m_guest_cid, key.guest_port, m_limits.handshake_timeout.count());
        close_connection(key, true);
    }

    if (m_listener_resume) {
        if (*m_listener_resume <= now) {
            m_listener_resume.reset();
            if (auto resumed = m_event_loop.modify(m_listener.get(), EventLoop::READABLE); !resumed)
                spdlog::warn("virtio-vsock cid {}: {}", m_guest_cid, resumed.error().message());
        } else {
            wait_for(*m_listener_resume);
        }
    }
    if (next)
        arm_timer(*next);
    schedule_rx();
}

} // namespace kvmm::virtio::vsock

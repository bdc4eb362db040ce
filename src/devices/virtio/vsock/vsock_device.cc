#include "devices/virtio/vsock/vsock_device.h"

#include "devices/virtio/config_space.h"
#include "devices/virtio/vsock/vsock_host_socket.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

namespace kvmm::virtio::vsock {

namespace {

char const* operation_name(uint16_t operation) {
    switch (static_cast<Operation>(operation)) {
    case Operation::Request:
        return "REQUEST";
    case Operation::Response:
        return "RESPONSE";
    case Operation::Reset:
        return "RST";
    case Operation::Shutdown:
        return "SHUTDOWN";
    case Operation::ReadWrite:
        return "RW";
    case Operation::CreditUpdate:
        return "CREDIT_UPDATE";
    case Operation::CreditRequest:
        return "CREDIT_REQUEST";
    case Operation::Invalid:
        break;
    }
    return "unknown";
}

} // namespace

Expected<std::unique_ptr<VsockDevice>> VsockDevice::create(EventLoop& event_loop, uint64_t guest_cid,
                                                           std::string uds_path, VsockLimits limits) {
    if (guest_cid <= HOST_CID || guest_cid > UINT32_MAX)
        return Error::format("vsock guest CID {} is reserved or above 32 bits (must be 3..{})", guest_cid, UINT32_MAX);
    int const timer = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timer < 0)
        return Error::from_errno("timerfd_create for the vsock device");
    UniqueFd timer_fd(timer);
    auto listener = TRY(listen_unix(uds_path));
    auto device = std::unique_ptr<VsockDevice>(
        new VsockDevice(event_loop, guest_cid, std::move(uds_path), std::move(listener), std::move(timer_fd), limits));
    VsockDevice* const raw = device.get();
    // The listener is added with an interest set so that accept back-off can park it.
    auto added =
        event_loop.add(raw->m_listener.get(), EventLoop::READABLE, [raw](uint32_t) { raw->on_listener_readable(); });
    if (added) {
        added = event_loop.add(raw->m_timer.get(), [raw] { raw->on_timer(); });
        if (!added)
            event_loop.remove(raw->m_listener.get());
    }
    if (!added) {
        ::unlink(raw->m_uds_path.c_str());
        return added.error().with_context(fmt::format("vsock socket '{}'", raw->m_uds_path));
    }
    return device;
}

VsockDevice::VsockDevice(EventLoop& event_loop, uint64_t guest_cid, std::string uds_path, UniqueFd listener,
                         UniqueFd timer, VsockLimits limits)
    : m_event_loop(event_loop), m_guest_cid(guest_cid), m_uds_path(std::move(uds_path)),
      m_listener(std::move(listener)), m_timer(std::move(timer)), m_limits(limits) {}

VsockDevice::~VsockDevice() {
    reset();
    m_event_loop.remove(m_listener.get());
    m_event_loop.remove(m_timer.get());
    ::unlink(m_uds_path.c_str());
}

std::vector<VirtioDevice::Counter> VsockDevice::counters() const {
    return { { "active_connections", m_connections.size() },
             { "pending_handshakes", m_handshakes.size() },
             { "connections_opened", m_connections_opened },
             { "connections_refused", m_connections_refused },
             { "guest_connections_over_limit", m_guest_connections_over_limit },
             { "host_connections_over_limit", m_host_connections_over_limit },
             { "handshakes_timed_out", m_handshakes_timed_out },
             { "handshakes_evicted", m_handshakes_evicted },
             { "host_requests_timed_out", m_host_requests_timed_out },
             { "host_port_collisions", m_host_port_collisions },
             { "accept_errors", m_accept_errors },
             { "budget_yields", budget_yields() },
             { "resets_sent", m_resets_sent },
             { "transport_resets_sent", m_transport_resets_sent },
             { "packets_dropped", m_packets_dropped },
             { "bytes_to_guest", m_bytes_to_guest },
             { "bytes_to_host", m_bytes_to_host } };
}

uint64_t VsockDevice::features() const {
    return feature_bit(FEATURE_RING_INDIRECT_DESC) | feature_bit(FEATURE_RING_EVENT_IDX);
}

void VsockDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    // 5.10.4: struct virtio_vsock_config { le64 guest_cid; }.
    std::array<uint8_t, sizeof(uint64_t)> config {};
    put_config<0>(config, m_guest_cid);
    read_config_window(config, offset, data);
}

Expected<void> VsockDevice::activate(ActivationContext context) {
    if (context.queues.size() <= TX_QUEUE || !context.queues[RX_QUEUE] || !context.queues[TX_QUEUE])
        return Error("the vsock device's rx and tx queues were not both set up");
    if (!context.reschedule)
        return Error("the vsock device needs a transport that can reschedule its queues");
    take_context(std::move(context));
    return {};
}

void VsockDevice::reset() {
    while (!m_connections.empty())
        close_connection(m_connections.begin()->first, false);
    while (!m_handshakes.empty())
        close_handshake(m_handshakes.begin()->first);
    m_rx_work.clear();
    m_pending_resets.clear();
    m_transport_reset_pending = false;
    drop_context();
}

void VsockDevice::process_queue(size_t index) {
    // A restored device tells the guest first that its connections are gone.
    if (m_transport_reset_pending)
        guarded(&VsockDevice::send_transport_reset);
    if (index == TX_QUEUE) {
        guarded(&VsockDevice::process_tx);
        guarded(&VsockDevice::process_rx); // replies the tx packets produced
    } else if (index == RX_QUEUE) {
        guarded(&VsockDevice::process_rx);
    }
    // The event queue carries only the transport reset above.
}

void VsockDevice::guarded(Expected<void> (VsockDevice::*work)()) {
    if (active())
        fail_on_error((this->*work)());
}

// ---- guest -> host (tx queue) ----

Expected<void> VsockDevice::process_tx() {
    auto& queue = *context().queues[TX_QUEUE];
    WorkBudget budget = m_limits.work_budget;
    bool used_any = false;
    bool yielded = false;
    while (true) {
        // With the budget spent the rest waits for the next turn; notifications stay as they
        // are (the reschedule below brings us back whether or not the driver notifies).
        if (budget.exhausted()) {
            yielded = true;
            break;
        }
        if (!TRY(queue.pop_or_enable_notifications(m_tx_chain)))
            break;
        budget.charge_chain();
        TRY(handle_tx_packet(budget));
        // 5.10.6.2: tx buffers are returned with nothing written.
        TRY(queue.add_used(m_tx_chain.head(), 0));
        used_any = true;
        if (!active())
            return {}; // a callback reset the device
    }
    if (used_any)
        TRY(interrupt_if_wanted(queue));
    if (yielded)
        yield_turn(TX_QUEUE);
    return {};
}

Expected<void> VsockDevice::handle_tx_packet(WorkBudget& budget) {
    if (m_tx_chain.readable_length() < HEADER_SIZE) {
        ++m_packets_dropped;
        guest_error(fmt::format("tx buffer of {} bytes is shorter than the {}-byte header",
                                m_tx_chain.readable_length(), HEADER_SIZE));
        return {};
    }
    HeaderBytes bytes;
    TRY(m_tx_chain.read(*context().memory, 0, bytes));
    budget.charge_bytes(HEADER_SIZE);
    PacketHeader const header = decode_header(bytes);
    if (header.source_cid != m_guest_cid || header.destination_cid != HOST_CID) {
        // Not a packet of this guest to the host: there is no one sensible to answer.
        ++m_packets_dropped;
        guest_error(fmt::format("dropped {} from cid {} to cid {} (guest cid {}, host cid {})",
                                operation_name(header.operation), header.source_cid, header.destination_cid,
                                m_guest_cid, HOST_CID));
        return {};
    }
    ConnectionKey const key { header.destination_port, header.source_port };
    auto const found = m_connections.find(key);
    Connection* const connection = found == m_connections.end() ? nullptr : found->second.get();
    uint64_t const available = m_tx_chain.readable_length() - HEADER_SIZE;
    if (header.type != TYPE_STREAM || header.length > available || header.length > MAX_PACKET_PAYLOAD) {
        ++m_packets_dropped;
        guest_error(fmt::format("malformed {} {}->{}: type {}, length {} with {} bytes present (limit {})",
                                operation_name(header.operation), header.source_port, header.destination_port,
                                header.type, header.length, available, MAX_PACKET_PAYLOAD));
        if (static_cast<Operation>(header.operation) == Operation::Reset)
            return {}; // 5.10.6.4: never answer an RST with an RST
        if (connection)
            close_connection(key, true);
        else
            queue_reset(header);
        return {};
    }

    auto const operation = static_cast<Operation>(header.operation);
    if (operation == Operation::Request) {
        handle_guest_request(header);
        return {};
    }
    if (!connection) {
        // 5.10.6.4: a packet for a connection that does not exist is answered with RST.
        if (operation != Operation::Reset)
            queue_reset(header);
        return {};
    }
    if (operation == Operation::Reset) {
        close_connection(key, false);
        return {};
    }
    connection->update_peer_credit(header);
    switch (operation) {
    case Operation::Response:
        if (connection->state() != Connection::State::AwaitingResponse) {
            guest_error(fmt::format("RESPONSE for established connection {}->{}", key.guest_port, key.host_port));
            close_connection(key, true);
            return {};
        }
        connection->set_established();
        ++m_connections_opened;
        // Firecracker's handshake reply to the client that asked for this port.
        connection->queue_host_reply(fmt::format("OK {}\n", key.host_port));
        if (write_to_host(*connection))
            refresh(*connection);
        return {};
    case Operation::ReadWrite:
        return handle_guest_data(*connection, header, budget);
    case Operation::Shutdown:
        handle_guest_shutdown(*connection, header);
        return {};
    case Operation::CreditUpdate:
        refresh(*connection); // the new credit may let the host socket be read again
        return {};
    case Operation::CreditRequest:
        connection->pending_control |= PENDING_CREDIT_UPDATE;
        refresh(*connection);
        return {};
    default:
        ++m_packets_dropped;
        guest_error(fmt::format("unknown operation {} on {}->{}", header.operation, key.guest_port, key.host_port));
        close_connection(key, true);
        return {};
    }
}

void VsockDevice::handle_guest_request(PacketHeader const& header) {
    ConnectionKey const key { header.destination_port, header.source_port };
    if (m_connections.contains(key)) {
        guest_error(fmt::format("REQUEST {}->{} for a connection that is already open", key.guest_port, key.host_port));
        close_connection(key, true);
        return;
    }
    if (m_guest_connection_count >= m_limits.guest_connections) {
        ++m_connections_refused;
        ++m_guest_connections_over_limit;
        guest_error(fmt::format("REQUEST to port {} refused: the guest has {} connections open", key.host_port,
                                m_guest_connection_count));
        queue_reset(header);
        return;
    }
    std::string const path = fmt::format("{}_{}", m_uds_path, key.host_port);
    auto stream = connect_unix(path);
    if (!stream) {
        ++m_connections_refused;
        spdlog::debug("virtio-vsock cid {}: guest connection to port {}: {}", m_guest_cid, key.host_port,
                      stream.error().message());
        queue_reset(header);
        return;
    }
    auto connection = std::make_unique<Connection>(std::move(*stream), key, Connection::State::Established);
    connection->update_peer_credit(header);
    connection->pending_control |= PENDING_RESPONSE;
    if (!register_connection(std::move(connection))) {
        queue_reset(header);
        return;
    }
    ++m_connections_opened;
    refresh(*m_connections.at(key));
}

bool VsockDevice::register_connection(std::unique_ptr<Connection> connection) {
    ConnectionKey const key = connection->key();
    int const fd = connection->fd();
    // The callers checked that the key is free; a live key is never replaced, since its fd
    // would stay registered in the loop after its socket closed.
    if (m_connections.contains(key))
        return false;
    if (auto added = m_event_loop.add(fd, 0, [this, key](uint32_t ready) { on_connection_ready(key, ready); });
        !added) {
        spdlog::warn("virtio-vsock cid {}: {}", m_guest_cid, added.error().message());
        return false; // `connection` closes the socket, which was never registered
    }
    if (connection->host_initiated)
        ++m_host_connection_count;
    else
        ++m_guest_connection_count;
    m_connections.emplace(key, std::move(connection));
    return true;
}

Expected<void> VsockDevice::handle_guest_data(Connection& connection, PacketHeader const& header, WorkBudget& budget) {
    if (connection.state() != Connection::State::Established || (connection.guest_shutdown & SHUTDOWN_SEND)) {
        guest_error(
            fmt::format("RW on {}->{} that is not open for sending", header.source_port, header.destination_port));
        close_connection(connection.key(), true);
        return {};
    }
    budget.charge_bytes(header.length); // copied now, written to the host socket below
    if (!TRY(connection.queue_guest_data(*context().memory, m_tx_chain, header.length))) {
        guest_error(fmt::format("RW of {} bytes on {}->{} exceeds the credit we gave ({} bytes)", header.length,
                                header.source_port, header.destination_port, Connection::BUFFER_SIZE));
        close_connection(connection.key(), true);
        return {};
    }
    if (write_to_host(connection))
        refresh(connection);
    return {};
}

void VsockDevice::handle_guest_shutdown(Connection& connection, PacketHeader const& header) {
    connection.guest_shutdown |= header.flags & (SHUTDOWN_RECEIVE | SHUTDOWN_SEND);
    if (write_to_host(connection))
        refresh(connection);
}

bool VsockDevice::write_to_host(Connection& connection) {
    uint64_t const before = connection.bytes_to_host();
    auto const result = connection.flush_to_host();
    m_bytes_to_host += connection.bytes_to_host() - before;
    if (result == Connection::FlushResult::Failed) {
        close_connection(connection.key(), true);
        return false;
    }
    if (result != Connection::FlushResult::Drained)
        return true;
    if ((connection.guest_shutdown & SHUTDOWN_SEND) && !connection.host_write_shut) {
        ::shutdown(connection.fd(), SHUT_WR); // the host reader sees end of stream
        connection.host_write_shut = true;
    }
    if (connection.guest_shutdown == (SHUTDOWN_RECEIVE | SHUTDOWN_SEND)) {
        // 5.10.6.5: a peer that shut down both directions expects an RST to finish.
        close_connection(connection.key(), true);
        return false;
    }
    return true;
}

void VsockDevice::refresh(Connection& connection) {
    if (connection.guest_needs_credit_update())
        connection.pending_control |= PENDING_CREDIT_UPDATE;
    if (auto modified = m_event_loop.modify(connection.fd(), connection.interest()); !modified)
        spdlog::warn("virtio-vsock cid {}: {}", m_guest_cid, modified.error().message());
    if ((connection.pending_control != 0 || connection.host_readable) && !connection.queued_for_rx) {
        connection.queued_for_rx = true;
        m_rx_work.push_back(connection.key());
    }
}

void VsockDevice::close_connection(ConnectionKey key, bool reset_guest) {
    auto found = m_connections.find(key);
    if (found == m_connections.end())
        return;
    Connection const& connection = *found->second;
    if (connection.host_initiated)
        --m_host_connection_count;
    else
        --m_guest_connection_count;
    if (connection.queued_for_rx) {
        // Forget its rx turn now: a guest that opens and resets connections while posting no
        // rx buffers would otherwise grow the list for ever.
        auto const listed = std::find(m_rx_work.begin(), m_rx_work.end(), key);
        if (listed != m_rx_work.end())
            m_rx_work.erase(listed);
    }
    m_event_loop.remove(connection.fd());
    m_connections.erase(found); // closes the host socket
    if (reset_guest && active()) {
        queue_reset(PacketHeader { .source_cid = m_guest_cid,
                                   .destination_cid = HOST_CID,
                                   .source_port = key.guest_port,
                                   .destination_port = key.host_port,
                                   .type = TYPE_STREAM });
    }
}

void VsockDevice::queue_reset(PacketHeader const& offending) {
    if (m_pending_resets.size() >= MAX_PENDING_RESETS) {
        ++m_packets_dropped;
        return;
    }
    m_pending_resets.push_back(PacketHeader { .source_cid = HOST_CID,
                                              .destination_cid = m_guest_cid,
                                              .source_port = offending.destination_port,
                                              .destination_port = offending.source_port,
                                              .type = TYPE_STREAM,
                                              .operation = static_cast<uint16_t>(Operation::Reset) });
}

// ---- device -> guest (rx queue) ----

Expected<void> VsockDevice::process_rx() {
    auto& queue = *context().queues[RX_QUEUE];
    WorkBudget budget = m_limits.work_budget;
    bool used_any = false;
    bool yielded = false;
    while (!m_pending_resets.empty() || !m_rx_work.empty()) {
        if (budget.exhausted()) {
            yielded = true;
            break;
        }
        // Out of buffers with work left: ask to be notified when the guest posts more.
        if (!TRY(queue.pop_or_enable_notifications(m_rx_chain)))
            break;
        auto const written = TRY(fill_rx_buffer());
        if (!written) {
            queue.undo_pop(m_rx_chain); // nothing could be sent now
            break;
        }
        TRY(queue.add_used(m_rx_chain.head(), *written));
        budget.charge_chain();
        budget.charge_bytes(*written);
        used_any = true;
    }
    if (used_any)
        TRY(interrupt_if_wanted(queue));
    if (yielded)
        yield_turn(RX_QUEUE);
    return {};
}

void VsockDevice::schedule_rx() {
    if (active() && (!m_pending_resets.empty() || !m_rx_work.empty()))
        context().reschedule(RX_QUEUE);
}

Expected<std::optional<uint32_t>> VsockDevice::fill_rx_buffer() {
    if (m_rx_chain.writable_length() < HEADER_SIZE) {
        guest_error(fmt::format("rx buffer of {} bytes cannot hold a {}-byte header", m_rx_chain.writable_length(),
                                HEADER_SIZE));
        return uint32_t { 0 }; // returned empty; the driver ignores it
    }
    if (!m_pending_resets.empty()) {
        PacketHeader const header = m_pending_resets.front();
        m_pending_resets.pop_front();
        ++m_resets_sent;
        return TRY(write_packet(header, {}));
    }
    // Each listed connection is looked at once per buffer (round robin: one with more to send
    // goes to the back), so this loop is bounded by the list's length.
    for (size_t remaining = m_rx_work.size(); remaining > 0; --remaining) {
        ConnectionKey const key = m_rx_work.front();
        m_rx_work.pop_front();
        auto found = m_connections.find(key);
        if (found == m_connections.end() || !found->second->queued_for_rx)
            continue; // closed, or a stale entry of a closed connection's successor
        Connection& connection = *found->second;
        connection.queued_for_rx = false;
        auto const packet = next_packet(connection);
        if (!packet)
            return packet.error();
        if (!m_connections.contains(key)) {
            // The host socket failed and the connection was closed; its RST goes out now.
            if (!m_pending_resets.empty())
                return fill_rx_buffer();
            continue;
        }
        refresh(connection);
        if (*packet)
            return packet;
    }
    return std::optional<uint32_t> {};
}

Expected<std::optional<uint32_t>> VsockDevice::next_packet(Connection& connection) {
    uint64_t const guest_cid = m_guest_cid;
    auto control = [&](PendingControl bit, Operation operation, uint32_t flags) -> Expected<std::optional<uint32_t>> {
        connection.pending_control &= ~bit;
        PacketHeader header = connection.make_header(operation, guest_cid, 0);
        header.flags = flags;
        return TRY(write_packet(header, {}));
    };
    if (connection.pending_control & PENDING_REQUEST)
        return control(PENDING_REQUEST, Operation::Request, 0);
    if (connection.pending_control & PENDING_RESPONSE)
        return control(PENDING_RESPONSE, Operation::Response, 0);
    if (connection.pending_control & PENDING_SHUTDOWN)
        return control(PENDING_SHUTDOWN, Operation::Shutdown, SHUTDOWN_SEND);
    if (connection.pending_control & PENDING_CREDIT_UPDATE)
        return control(PENDING_CREDIT_UPDATE, Operation::CreditUpdate, 0);
    if (connection.pending_control & PENDING_CREDIT_REQUEST)
        return control(PENDING_CREDIT_REQUEST, Operation::CreditRequest, 0);
    if (!connection.host_readable)
        return std::optional<uint32_t> {};

    uint64_t const room = std::min<uint64_t>(m_rx_chain.writable_length() - HEADER_SIZE, MAX_PACKET_PAYLOAD);
    uint32_t const limit = static_cast<uint32_t>(std::min<uint64_t>(room, connection.peer_free_space()));
    if (connection.peer_free_space() == 0) {
        // No credit: stop reading the host socket until the guest's CREDIT_UPDATE (refresh()
        // re-arms it then); ask for one in case the guest does not volunteer it.
        connection.host_readable = false;
        connection.pending_control |= PENDING_CREDIT_REQUEST;
        return std::optional<uint32_t> {};
    }
    if (limit == 0)
        return std::optional<uint32_t> {}; // a buffer too small for data; it may carry control
    m_scratch.resize(limit);
    ssize_t received;
    do
        received = ::recv(connection.fd(), m_scratch.data(), limit, MSG_DONTWAIT);
    while (received < 0 && errno == EINTR);
    if (received < 0) {
        connection.host_readable = false;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return std::optional<uint32_t> {};
        spdlog::debug("virtio-vsock cid {}: host socket of port {}: {}", m_guest_cid, connection.key().host_port,
                      std::strerror(errno));
        close_connection(connection.key(), true);
        return std::optional<uint32_t> {};
    }
    if (received == 0) {
        // The host side will send no more: tell the guest (5.10.6.5), keep taking its data.
        connection.host_readable = false;
        connection.host_end_of_stream = true;
        return control(PENDING_SHUTDOWN, Operation::Shutdown, SHUTDOWN_SEND);
    }
    auto const payload = std::span(m_scratch).first(static_cast<size_t>(received));
    PacketHeader const header =
        connection.make_header(Operation::ReadWrite, guest_cid, static_cast<uint32_t>(received));
    m_bytes_to_guest += payload.size();
    return TRY(write_packet(header, payload));
}

Expected<uint32_t> VsockDevice::write_packet(PacketHeader const& header, std::span<std::byte const> payload) {
    auto const& memory = *context().memory;
    HeaderBytes const bytes = encode_header(header);
    TRY(m_rx_chain.write(memory, 0, bytes));
    size_t const written = TRY(m_rx_chain.write(memory, HEADER_SIZE, payload));
    return static_cast<uint32_t>(HEADER_SIZE + written);
}

} // namespace kvmm::virtio::vsock

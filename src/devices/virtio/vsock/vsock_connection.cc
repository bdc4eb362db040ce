#include "devices/virtio/vsock/vsock_connection.h"

#include "base/event_loop.h"

#include <cerrno>
#include <sys/socket.h>

namespace kvmm::virtio::vsock {

Connection::Connection(UniqueFd stream, ConnectionKey key, State state)
    : m_stream(std::move(stream)), m_key(key), m_state(state) {}

void Connection::queue_host_reply(std::string_view reply) {
    auto const bytes = std::as_bytes(std::span(reply.data(), reply.size()));
    // Nothing else is queued before the handshake reply, so it is at the front.
    m_output.insert(m_output.end(), bytes.begin(), bytes.end());
    m_reply_bytes += reply.size();
}

Expected<bool> Connection::queue_guest_data(GuestMemory const& memory, DescriptorChain const& chain, uint32_t length) {
    uint32_t const held = m_received_count - m_forward_count;
    if (length > BUFFER_SIZE - held)
        return false;
    if (m_output_offset > 0 && m_output_offset * 2 >= m_output.size()) {
        m_output.erase(m_output.begin(), m_output.begin() + static_cast<std::ptrdiff_t>(m_output_offset));
        m_output_offset = 0;
    }
    size_t const start = m_output.size();
    m_output.resize(start + length);
    auto const copied = TRY(chain.read(memory, HEADER_SIZE, std::span(m_output).subspan(start)));
    // The caller checked that the chain holds `length` payload bytes.
    m_output.resize(start + copied);
    m_received_count += static_cast<uint32_t>(copied);
    return true;
}

Connection::FlushResult Connection::flush_to_host() {
    while (has_host_output()) {
        ssize_t const sent = ::send(m_stream.get(), m_output.data() + m_output_offset,
                                    m_output.size() - m_output_offset, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? FlushResult::WouldBlock : FlushResult::Failed;
        }
        size_t const written = static_cast<size_t>(sent);
        m_output_offset += written;
        size_t const reply = std::min(written, m_reply_bytes);
        m_reply_bytes -= reply;
        m_forward_count += static_cast<uint32_t>(written - reply);
        m_bytes_to_host += written - reply;
    }
    m_output.clear();
    m_output_offset = 0;
    return FlushResult::Drained;
}

void Connection::update_peer_credit(PacketHeader const& header) {
    m_peer_buffer_allocation = header.buffer_allocation;
    m_peer_forward_count = header.forward_count;
}

uint32_t Connection::peer_free_space() const {
    uint32_t const in_flight = m_sent_count - m_peer_forward_count;
    // A guest reporting more consumed than we sent (in_flight wraps past buf_alloc) gets no
    // credit rather than a huge one.
    return in_flight >= m_peer_buffer_allocation ? 0 : m_peer_buffer_allocation - in_flight;
}

PacketHeader Connection::make_header(Operation operation, uint64_t guest_cid, uint32_t payload) {
    m_sent_count += payload;
    m_advertised_forward_count = m_forward_count;
    return PacketHeader {
        .source_cid = HOST_CID,
        .destination_cid = guest_cid,
        .source_port = m_key.host_port,
        .destination_port = m_key.guest_port,
        .length = payload,
        .type = TYPE_STREAM,
        .operation = static_cast<uint16_t>(operation),
        .flags = 0,
        .buffer_allocation = BUFFER_SIZE,
        .forward_count = m_forward_count,
    };
}

bool Connection::guest_needs_credit_update() const {
    if (m_forward_count == m_advertised_forward_count)
        return false;
    uint32_t const guest_view_in_flight = m_received_count - m_advertised_forward_count;
    return guest_view_in_flight >= BUFFER_SIZE / 2;
}

uint32_t Connection::interest() const {
    uint32_t events = 0;
    if (m_state == State::Established && !host_readable && !host_end_of_stream &&
        (guest_shutdown & SHUTDOWN_RECEIVE) == 0 && peer_free_space() > 0)
        events |= EventLoop::READABLE;
    if (has_host_output() && !host_write_shut)
        events |= EventLoop::WRITABLE;
    return events;
}

} // namespace kvmm::virtio::vsock

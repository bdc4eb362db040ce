// Connection: one vsock stream between a guest port and a host Unix socket,
// with the credit accounting of virtio 1.2 section 5.10.6.3.
//
// Credit, in both directions:
//   - guest -> host: we advertise buf_alloc = BUFFER_SIZE and fwd_cnt = bytes
//     written to the host socket. A well-behaved guest therefore never has
//     more than BUFFER_SIZE bytes unwritten here, which is exactly what the
//     to-host buffer holds; data beyond that is a protocol violation.
//   - host -> guest: we send at most peer buf_alloc - (tx_cnt - peer fwd_cnt)
//     payload bytes; with no credit the host socket is not read at all, so
//     the host writer sees ordinary socket backpressure.
// Counters are u32 and wrap, as the specification's are.
//
// Threading: owned by VsockDevice, used on its event-loop thread only.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/vsock/vsock_packet.h"
#include "memory/guest_memory.h"

#include <chrono>
#include <compare>
#include <cstdint>
#include <span>
#include <vector>

namespace kvmm::virtio::vsock {

struct ConnectionKey {
    uint32_t host_port;
    uint32_t guest_port;
    auto operator<=>(ConnectionKey const&) const = default;
};

// Control packets a connection still owes the guest (sent before its data, in this order).
enum PendingControl : uint32_t {
    PENDING_REQUEST = 1u << 0,
    PENDING_RESPONSE = 1u << 1,
    PENDING_SHUTDOWN = 1u << 2,
    PENDING_CREDIT_UPDATE = 1u << 3,
    PENDING_CREDIT_REQUEST = 1u << 4,
};

class Connection {
public:
    // What we advertise as buf_alloc, and the most guest data held for a slow host socket.
    static constexpr uint32_t BUFFER_SIZE = 256 * 1024;

    enum class State {
        AwaitingResponse, // host-initiated: REQUEST sent or queued, no RESPONSE yet
        Established,
    };

    enum class FlushResult { Drained, WouldBlock, Failed };

    Connection(UniqueFd stream, ConnectionKey key, State state);

    int fd() const { return m_stream.get(); }
    ConnectionKey key() const { return m_key; }
    State state() const { return m_state; }
    void set_established() { m_state = State::Established; }

    // Queues bytes for the host that are not guest payload (the "OK <port>\n" handshake
    // reply), so they do not count in fwd_cnt.
    void queue_host_reply(std::string_view reply);
    // Copies `length` payload bytes from the readable part of `chain` (after the header) into
    // the to-host buffer. False when they do not fit: the guest ignored our credit.
    Expected<bool> queue_guest_data(GuestMemory const& memory, DescriptorChain const& chain, uint32_t length);
    // Writes as much of the to-host buffer as the socket takes now.
    FlushResult flush_to_host();
    bool has_host_output() const { return m_output_offset < m_output.size(); }

    // Records the guest's buf_alloc/fwd_cnt from any packet it sent on this connection.
    void update_peer_credit(PacketHeader const& header);
    // How many payload bytes the guest can take now.
    uint32_t peer_free_space() const;
    // Fills in our side of a header for the guest (ports, type, buf_alloc, fwd_cnt) and
    // counts `payload` bytes as sent.
    PacketHeader make_header(Operation operation, uint64_t guest_cid, uint32_t payload);
    // Whether the guest's view of our free space is low enough, and stale enough, that a
    // CREDIT_UPDATE would let it send more.
    bool guest_needs_credit_update() const;

    // Event-loop interest (EventLoop::READABLE/WRITABLE) for the current state.
    uint32_t interest() const;

    uint32_t pending_control { 0 };
    bool host_readable { false }; // the socket reported readable; waiting for an rx buffer
    bool host_end_of_stream { false };
    bool queued_for_rx { false };   // listed in the device's rx work list
    uint32_t guest_shutdown { 0 };  // SHUTDOWN_* flags the guest sent
    bool host_write_shut { false }; // shutdown(SHUT_WR) done after the guest's SHUTDOWN_SEND
    bool host_initiated { false };  // counts against the host side's connection cap
    // Host-initiated, AwaitingResponse: when the device gives up on the guest's RESPONSE.
    std::chrono::steady_clock::time_point response_deadline {};

    uint64_t bytes_to_host() const { return m_bytes_to_host; }

private:
    UniqueFd m_stream;
    ConnectionKey m_key;
    State m_state;

    std::vector<std::byte> m_output;
    size_t m_output_offset { 0 };
    size_t m_reply_bytes { 0 }; // leading bytes of m_output that are not guest payload

    uint32_t m_peer_buffer_allocation { 0 };
    uint32_t m_peer_forward_count { 0 };
    uint32_t m_sent_count { 0 };     // tx_cnt: payload bytes sent to the guest
    uint32_t m_received_count { 0 }; // payload bytes taken from the guest
    uint32_t m_forward_count { 0 };  // fwd_cnt: guest payload written to the host socket
    uint32_t m_advertised_forward_count { 0 };
    uint64_t m_bytes_to_host { 0 };
};

} // namespace kvmm::virtio::vsock

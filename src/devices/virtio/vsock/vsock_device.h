// VsockDevice: the virtio socket device (virtio 1.2 section 5.10), stream
// sockets only, with the host side of Firecracker's hybrid vsock
// (vsock_host_socket.h): guest ports reach host programs through Unix sockets.
//
// Queues (5.10.2): 0 rx (device -> guest packets), 1 tx (guest -> device),
// 2 event (device -> guest events: only the transport reset a restored device
// sends, 5.10.6.7; otherwise its buffers are left with the device unused).
// Config space (5.10.4): guest_cid, le64.
//
// Host-initiated connections: a client connects to `uds_path` and writes
// "CONNECT <port>\n"; the device sends the guest a REQUEST from host CID 2 and
// a fresh host port (from 2^30 upwards); the guest's RESPONSE makes the device
// write "OK <host port>\n" to the client, an RST closes the client. Clients
// that connect while the driver is not active (before DRIVER_OK or after a
// reset) are closed at once: there is no guest to ask.
// Guest-initiated: a REQUEST to CID 2 port P connects to "<uds_path>_<P>";
// RESPONSE on success, RST if nothing listens there.
//
// Guest data is hostile: a packet from a CID other than the guest's, or to a
// CID other than the host's, is dropped; a bad type, a length beyond the
// buffer or above 64 KiB, an unknown operation or a packet for a connection
// that does not exist gets an RST - each with one (rate-limited) log line.
// Ring-level violations (reported by Queue) put the device in NEEDS_RESET.
//
// Sharing the event loop (DESIGN.md): each wake-up of the tx or rx queue
// handles at most one WorkBudget (work_budget.h) of packets and bytes, then
// asks for another turn (ActivationContext::reschedule); host-socket callbacks
// only note readiness and schedule the rx queue, so reading host sockets into
// the guest is budgeted in one place. Connections with data take turns (each
// sends one packet, then goes to the back of the list); the listener accepts
// at most a few clients per wake-up and backs off when accept fails for want
// of fds or memory.
//
// Resources (VsockLimits): each connection and each client still sending its
// CONNECT line holds exactly one host fd. Guest-initiated and host-initiated
// connections have separate caps, so a guest that fills its share cannot shut
// host programs out (nor the reverse); a REQUEST beyond the guest's cap gets
// an RST, a client beyond the host's cap is closed at once. A client has
// handshake_timeout to send its line, and a host-initiated connection as long
// again for the guest's RESPONSE; then it is dropped. Memory: at most
// Connection::BUFFER_SIZE of guest data per connection (for a host program
// that does not read), none for host data (it stays in the host socket until
// the guest has credit and an rx buffer), MAX_PENDING_RESETS headers.
//
// Threading: see VirtioDevice. Everything except read_config() runs on the
// event-loop thread, including the socket and timer callbacks; guest_cid is
// constant, so read_config() needs no lock.
#pragma once

#include "base/event_loop.h"
#include "base/rate_limited_log.h"
#include "devices/virtio/device_state.h"
#include "devices/virtio/virtio_device_base.h"
#include "devices/virtio/vsock/vsock_connection.h"
#include "devices/virtio/vsock/vsock_packet.h"
#include "devices/virtio/work_budget.h"

#include <fmt/format.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace kvmm::virtio::vsock {

// Per-device resource limits. The defaults are what kvmm runs with; tests shorten them.
struct VsockLimits {
    // Guest-initiated connections open at once, and host-initiated ones (including clients
    // still sending their CONNECT line). Each costs one fd, so together with the listener and
    // the timer the device holds at most 514 fds: kvmm's own few dozen (vCPUs, queue
    // eventfds, disks, TAP queues, API clients) still fit under the common soft limit of
    // 1024 with room to spare, whatever the guest does. 256 a side is far above what guest
    // agents use (a handful of connections each) and bounds the memory held for host
    // programs that do not read to 512 x Connection::BUFFER_SIZE (128 MiB).
    static constexpr size_t GUEST_CONNECTIONS = 256;
    static constexpr size_t HOST_CONNECTIONS = 256;
    // Clients that have connected but not yet sent "CONNECT <port>\n" (part of the host share);
    // when full, the oldest is dropped for the newcomer, so silent clients cannot lock out ones
    // that talk at once.
    static constexpr size_t HANDSHAKES = 64;
    // A client writes its line right after connecting; 5 s leaves a loaded host plenty of
    // slack. The guest gets as long again to answer a host-initiated REQUEST (a Linux guest
    // answers at once, RESPONSE or RST).
    static constexpr std::chrono::milliseconds HANDSHAKE_TIMEOUT { 5000 };
    // How long the listener rests after accept() failed for want of fds or memory, instead of
    // spinning on a socket that stays readable.
    static constexpr std::chrono::milliseconds ACCEPT_BACKOFF { 100 };

    size_t guest_connections { GUEST_CONNECTIONS };
    size_t host_connections { HOST_CONNECTIONS };
    size_t handshakes { HANDSHAKES };
    std::chrono::milliseconds handshake_timeout { HANDSHAKE_TIMEOUT };
    std::chrono::milliseconds accept_backoff { ACCEPT_BACKOFF };
    // What one wake-up of the tx or rx queue may do.
    WorkBudget work_budget {};
};

// The vsock device's saved state (docs/ARCHITECTURE.md "Saved state"):
//   - offered_features: a fingerprint of the configuration;
//   - guest_cid: the configuration space; a restore onto another CID is refused;
//   - active: negotiated features and each queue's progress. The device holds no chain
//     between turns (rx buffers it cannot fill go back to the ring, an event buffer is popped
//     only to be filled), so no queue has held heads.
// Deliberately not saved: connections and handshakes. Their other ends are host sockets
// owned by programs of this host, which a state cannot carry; as Firecracker does, the restored
// device sends the guest VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, on which a driver drops every
// connection and reads guest_cid again (5.10.6.7). RSTs still queued for the guest go with
// the connections; host ports start again from FIRST_HOST_PORT (the guest holds none of the old
// ones after the reset); the counters are metrics of this process.
struct VsockState {
    static constexpr std::string_view SECTION = "virtio-vsock";
    static constexpr uint32_t VERSION = 1;

    uint64_t offered_features { 0 };
    uint64_t guest_cid { 0 };
    std::optional<ActiveDeviceState> active;

    bool operator==(VsockState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<VsockState> decode(StateReader& reader);
};

// struct virtio_vsock_event's only id (5.10.6.7).
inline constexpr uint32_t EVENT_TRANSPORT_RESET = 0;

class VsockDevice final : public VirtioDeviceBase {
public:
    static constexpr uint16_t QUEUE_SIZE = 256;
    static constexpr size_t RX_QUEUE = 0;
    static constexpr size_t TX_QUEUE = 1;
    static constexpr size_t EVENT_QUEUE = 2;
    // The most payload one packet carries either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
    static constexpr uint32_t MAX_PACKET_PAYLOAD = 64 * 1024;
    // RSTs waiting for an rx buffer; beyond this they are dropped (the guest's connection
    // then times out rather than us buffering without bound for a guest that posts nothing).
    static constexpr size_t MAX_PENDING_RESETS = 1024;
    // First port handed to host-initiated connections (as Firecracker does).
    static constexpr uint32_t FIRST_HOST_PORT = 1u << 30;

    // Listens on `uds_path` (see listen_unix for stale and live paths). `guest_cid` must be
    // at least 3 (5.10.4: 0-2 are reserved) and fit in 32 bits, as drivers assume.
    static Expected<std::unique_ptr<VsockDevice>> create(EventLoop& event_loop, uint64_t guest_cid,
                                                         std::string uds_path, VsockLimits limits = {});
    ~VsockDevice() override;
    VsockDevice(VsockDevice const&) = delete;
    VsockDevice& operator=(VsockDevice const&) = delete;

    DeviceType type() const override { return DeviceType::Vsock; }
    uint64_t features() const override;
    std::span<uint16_t const> queue_max_sizes() const override { return m_queue_sizes; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Expected<void> activate(ActivationContext context) override;
    void process_queue(size_t index) override;
    void reset() override;

    uint64_t guest_cid() const { return m_guest_cid; }
    std::string const& uds_path() const { return m_uds_path; }

    // Saved state (vsock_device_state.cc), event-loop thread. Saving leaves this device's
    // connections as they are. restore() puts a device that is not active back where the saved
    // one was (`context` present exactly when it was active; a refusal changes nothing), closes
    // whatever host sockets it has, and when active owes the guest a transport reset: it is
    // sent on the event queue at the device's next turn, which restore() asks for.
    VsockState save() const;
    Expected<void> restore(VsockState const& state, std::optional<ActivationContext> context);
    Expected<void> save_state(StateWriter& writer) const override;
    Expected<void> restore_state(StateReader& reader, std::optional<ActivationContext> context) override;
    // Whether the transport reset is still owed to the guest (no event buffer yet).
    bool transport_reset_pending() const { return m_transport_reset_pending; }

    // Metrics.
    size_t active_connections() const { return m_connections.size(); }
    size_t pending_handshakes() const { return m_handshakes.size(); }
    uint64_t connections_opened() const { return m_connections_opened; }
    // Every connection refused: no listener, no driver, or a cap reached.
    uint64_t connections_refused() const { return m_connections_refused; }
    uint64_t guest_connections_over_limit() const { return m_guest_connections_over_limit; }
    uint64_t host_connections_over_limit() const { return m_host_connections_over_limit; }
    uint64_t handshakes_timed_out() const { return m_handshakes_timed_out; }
    uint64_t handshakes_evicted() const { return m_handshakes_evicted; }
    uint64_t host_requests_timed_out() const { return m_host_requests_timed_out; }
    uint64_t host_port_collisions() const { return m_host_port_collisions; }
    uint64_t accept_errors() const { return m_accept_errors; }
    uint64_t resets_sent() const { return m_resets_sent; }
    uint64_t transport_resets_sent() const { return m_transport_resets_sent; }
    uint64_t packets_dropped() const { return m_packets_dropped; }
    uint64_t bytes_to_guest() const { return m_bytes_to_guest; }
    uint64_t bytes_to_host() const { return m_bytes_to_host; }
    // Connections waiting for an rx buffer (each listed once).
    size_t pending_rx_connections() const { return m_rx_work.size(); }
    std::vector<Counter> counters() const override;

private:
    using Clock = std::chrono::steady_clock;

    struct Handshake {
        UniqueFd stream;
        std::string line;
        Clock::time_point deadline;
    };

    VsockDevice(EventLoop& event_loop, uint64_t guest_cid, std::string uds_path, UniqueFd listener, UniqueFd timer,
                VsockLimits limits);

    // Runs `work`; a ring-level Error puts the device into NEEDS_RESET (once).
    void guarded(Expected<void> (VsockDevice::*work)());
    Expected<void> process_tx();
    Expected<void> process_rx();
    // Writes the owed transport reset into the next event buffer, if the driver posted one.
    Expected<void> send_transport_reset();
    Expected<void> handle_tx_packet(WorkBudget& budget);
    Expected<std::optional<uint32_t>> fill_rx_buffer();
    Expected<std::optional<uint32_t>> next_packet(Connection& connection);
    Expected<uint32_t> write_packet(PacketHeader const& header, std::span<std::byte const> payload);

    void handle_guest_request(PacketHeader const& header);
    Expected<void> handle_guest_data(Connection& connection, PacketHeader const& header, WorkBudget& budget);
    void handle_guest_shutdown(Connection& connection, PacketHeader const& header);

    // Host side (vsock_device_host.cc).
    void on_listener_readable();
    void accept_client(UniqueFd stream);
    void on_handshake_readable(int fd);
    void start_host_connection(int fd, uint32_t guest_port);
    // The next host port that forms no live key with `guest_port` (never reuses one).
    std::optional<uint32_t> allocate_host_port(uint32_t guest_port);
    void on_connection_ready(ConnectionKey key, uint32_t ready);
    void on_timer();
    // Makes sure the timer fires by `deadline` (it may fire earlier; on_timer re-arms).
    void arm_timer(Clock::time_point deadline);
    // Asks for a turn of the rx queue when packets wait for the guest.
    void schedule_rx();

    // Writes what the host socket takes and finishes a shutdown the guest asked for; may
    // close the connection (returns false then).
    bool write_to_host(Connection& connection);
    // Re-arms the socket interest and schedules the connection's rx work.
    void refresh(Connection& connection);
    void close_connection(ConnectionKey key, bool reset_guest);
    void close_handshake(int fd);
    // Adds to the map and the loop; on failure leaves neither (the fd is closed).
    bool register_connection(std::unique_ptr<Connection> connection);
    void queue_reset(PacketHeader const& offending);
    void on_failed() override { reset(); }
    std::string log_name() const override { return fmt::format("virtio-vsock cid {}", m_guest_cid); }

    EventLoop& m_event_loop;
    uint64_t const m_guest_cid;
    std::string const m_uds_path;
    UniqueFd m_listener;
    UniqueFd m_timer; // timerfd: handshake and response deadlines, accept back-off
    VsockLimits const m_limits;
    uint16_t m_queue_sizes[3] { QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE };

    std::map<int, Handshake> m_handshakes;
    std::map<ConnectionKey, std::unique_ptr<Connection>> m_connections;
    std::deque<ConnectionKey> m_rx_work;
    std::deque<PacketHeader> m_pending_resets;
    size_t m_guest_connection_count { 0 };
    size_t m_host_connection_count { 0 };
    uint32_t m_next_host_port { FIRST_HOST_PORT };
    std::optional<Clock::time_point> m_timer_deadline;
    std::optional<Clock::time_point> m_listener_resume; // set while accepting is paused
    bool m_transport_reset_pending { false };
    DescriptorChain m_tx_chain;
    DescriptorChain m_rx_chain;
    DescriptorChain m_event_chain;
    std::vector<std::byte> m_scratch;

    uint64_t m_connections_opened { 0 };
    uint64_t m_connections_refused { 0 };
    uint64_t m_guest_connections_over_limit { 0 };
    uint64_t m_host_connections_over_limit { 0 };
    uint64_t m_handshakes_timed_out { 0 };
    uint64_t m_handshakes_evicted { 0 };
    uint64_t m_host_requests_timed_out { 0 };
    uint64_t m_host_port_collisions { 0 };
    uint64_t m_accept_errors { 0 };
    uint64_t m_resets_sent { 0 };
    uint64_t m_transport_resets_sent { 0 };
    uint64_t m_packets_dropped { 0 };
    uint64_t m_bytes_to_guest { 0 };
    uint64_t m_bytes_to_host { 0 };
    RateLimitedLog m_host_log;
};

} // namespace kvmm::virtio::vsock

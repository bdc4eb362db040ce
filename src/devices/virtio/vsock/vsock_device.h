// VsockDevice: the virtio socket device (virtio 1.2 section 5.10), stream
// sockets only, with the host side of Firecracker's hybrid vsock
// (vsock_host_socket.h): guest ports reach host programs through Unix sockets.
//
// Queues (5.10.2): 0 rx (device -> guest packets), 1 tx (guest -> device),
// 2 event (only used for transport resets after migration, which kvmm does not
// do; its buffers are left unused). Config space (5.10.4): guest_cid, le64.
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
// Work per callback is bounded by the queue size and MAX_PACKET_PAYLOAD; memory
// by MAX_CONNECTIONS x Connection::BUFFER_SIZE plus MAX_PENDING_RESETS headers.
//
// Threading: see VirtioDevice. Everything except read_config() runs on the
// event-loop thread, including the socket callbacks; guest_cid is constant,
// so read_config() needs no lock.
#pragma once

#include "base/event_loop.h"
#include "base/rate_limited_log.h"
#include "devices/virtio/virtio_device.h"
#include "devices/virtio/vsock/vsock_connection.h"
#include "devices/virtio/vsock/vsock_packet.h"

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace kvmm::virtio::vsock {

class VsockDevice final : public VirtioDevice {
public:
    static constexpr uint16_t QUEUE_SIZE = 256;
    static constexpr size_t RX_QUEUE = 0;
    static constexpr size_t TX_QUEUE = 1;
    static constexpr size_t EVENT_QUEUE = 2;
    // Open connections plus clients still sending their CONNECT line.
    static constexpr size_t MAX_CONNECTIONS = 1024;
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
                                                         std::string uds_path);
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

    // Metrics.
    size_t active_connections() const { return m_connections.size(); }
    uint64_t connections_opened() const { return m_connections_opened; }
    uint64_t connections_refused() const { return m_connections_refused; }
    uint64_t resets_sent() const { return m_resets_sent; }
    uint64_t packets_dropped() const { return m_packets_dropped; }
    uint64_t bytes_to_guest() const { return m_bytes_to_guest; }
    uint64_t bytes_to_host() const { return m_bytes_to_host; }
    std::vector<Counter> counters() const override {
        return { { "active_connections", m_connections.size() },
                 { "connections_opened", m_connections_opened },
                 { "connections_refused", m_connections_refused },
                 { "resets_sent", m_resets_sent },
                 { "packets_dropped", m_packets_dropped },
                 { "bytes_to_guest", m_bytes_to_guest },
                 { "bytes_to_host", m_bytes_to_host } };
    }

private:
    struct Handshake {
        UniqueFd stream;
        std::string line;
    };

    VsockDevice(EventLoop& event_loop, uint64_t guest_cid, std::string uds_path, UniqueFd listener);

    // Runs `work`; a ring-level Error puts the device into NEEDS_RESET (once).
    void guarded(Expected<void> (VsockDevice::*work)());
    Expected<void> process_tx();
    Expected<void> process_rx();
    Expected<void> handle_tx_packet();
    Expected<std::optional<uint32_t>> fill_rx_buffer();
    Expected<std::optional<uint32_t>> next_packet(Connection& connection);
    Expected<uint32_t> write_packet(PacketHeader const& header, std::span<std::byte const> payload);

    void handle_guest_request(PacketHeader const& header);
    Expected<void> handle_guest_data(Connection& connection, PacketHeader const& header);
    void handle_guest_shutdown(Connection& connection, PacketHeader const& header);

    void on_listener_readable();
    void on_handshake_readable(int fd);
    void on_connection_ready(ConnectionKey key, uint32_t ready);

    // Writes what the host socket takes and finishes a shutdown the guest asked for; may
    // close the connection (returns false then).
    bool write_to_host(Connection& connection);
    // Re-arms the socket interest and schedules the connection's rx work.
    void refresh(Connection& connection);
    void close_connection(ConnectionKey key, bool reset_guest);
    void close_handshake(int fd);
    void queue_reset(PacketHeader const& offending);
    void guest_error(std::string const& message);

    EventLoop& m_event_loop;
    uint64_t const m_guest_cid;
    std::string const m_uds_path;
    UniqueFd m_listener;
    uint16_t m_queue_sizes[3] { QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE };

    std::optional<ActivationContext> m_context;
    std::map<int, Handshake> m_handshakes;
    std::map<ConnectionKey, std::unique_ptr<Connection>> m_connections;
    std::deque<ConnectionKey> m_rx_work;
    std::deque<PacketHeader> m_pending_resets;
    uint32_t m_next_host_port { FIRST_HOST_PORT };
    DescriptorChain m_tx_chain;
    DescriptorChain m_rx_chain;
    std::vector<std::byte> m_scratch;

    uint64_t m_connections_opened { 0 };
    uint64_t m_connections_refused { 0 };
    uint64_t m_resets_sent { 0 };
    uint64_t m_packets_dropped { 0 };
    uint64_t m_bytes_to_guest { 0 };
    uint64_t m_bytes_to_host { 0 };
    RateLimitedLog m_guest_log;
};

} // namespace kvmm::virtio::vsock

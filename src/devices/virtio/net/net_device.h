// NetDevice: virtio network device (virtio 1.2 section 5.1) on a host TAP
// interface, with one receive queue (0) and one transmit queue (1); no control
// queue, no multiqueue.
//
// The virtio-net header (5.1.6, 12 bytes with VIRTIO_F_VERSION_1) passes
// between guest and TAP unchanged in both directions, because the TAP speaks
// the same header (IFF_VNET_HDR); only num_buffers is the device's to write on
// receive. Checksum and segmentation offloads therefore cost nothing here: at
// activation the TAP is told which offloaded frames the guest accepts.
//
// Transmit: each chain's readable buffers go to the TAP with one writev(2),
// straight from guest RAM (GuestMemory::host_ranges). A chain shorter than the
// header, longer than MAX_FRAME_SIZE or in more than IOV_MAX pieces is dropped
// and counted; a header the kernel rejects (bad GSO fields) is dropped the same
// way. When the TAP cannot take a frame (EAGAIN) the chain is put back and the
// device waits for the fd to become writable (EPOLLOUT) before it goes on.
//
// Receive: the TAP fd is watched for readability only while the guest has
// posted receive buffers. With none left the device stops reading, so frames
// wait in the kernel's TAP queue instead of being dropped here, and it resumes
// when the driver notifies queue 0. A frame is read into a scratch buffer and
// copied into one chain, or with VIRTIO_NET_F_MRG_RXBUF spread over as many
// chains as it needs (num_buffers, 5.1.6.3.2). A frame that was read but does
// not fit yet stays pending until buffers arrive.
//
// Rate limiting: optional RateLimiters for each direction. A refused frame
// waits (a transmit chain is put back, a received frame stays pending) until
// the limiter's timer fd, watched by the device, fires.
//
// Threading: see VirtioDevice. Every TAP and timer callback runs on the event
// loop's thread; read_config() reads only state fixed at construction. The
// device must be destroyed on the event loop's thread (it unregisters its fds).
#pragma once

#include "backends/net/mac_address.h"
#include "backends/net/tap.h"
#include "base/event_loop.h"
#include "base/rate_limited_log.h"
#include "base/rate_limiter.h"
#include "devices/virtio/device_state.h"
#include "devices/virtio/virtio_device_base.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace kvmm::virtio {

// Feature bits of virtio 1.2 section 5.1.3.
namespace net_feature {
inline constexpr unsigned CSUM = 0;
inline constexpr unsigned GUEST_CSUM = 1;
inline constexpr unsigned MAC = 5;
inline constexpr unsigned GUEST_TSO4 = 7;
inline constexpr unsigned GUEST_TSO6 = 8;
inline constexpr unsigned GUEST_ECN = 9;
inline constexpr unsigned GUEST_UFO = 10;
inline constexpr unsigned HOST_TSO4 = 11;
inline constexpr unsigned HOST_TSO6 = 12;
inline constexpr unsigned HOST_ECN = 13;
inline constexpr unsigned HOST_UFO = 14;
inline constexpr unsigned MRG_RXBUF = 15;
inline constexpr unsigned STATUS = 16;
} // namespace net_feature

// Configuration space layout (5.1.4): mac, status, max_virtqueue_pairs; little-endian.
inline constexpr uint64_t NET_CONFIG_MAC_OFFSET = 0;
inline constexpr uint64_t NET_CONFIG_STATUS_OFFSET = 6;
inline constexpr uint64_t NET_CONFIG_MAX_VIRTQUEUE_PAIRS_OFFSET = 8;
inline constexpr uint64_t NET_CONFIG_SIZE = 10;
inline constexpr uint16_t NET_STATUS_LINK_UP = 1;

// struct virtio_net_hdr_v1 (5.1.6): what precedes every frame on both queues.
struct VirtioNetHeader {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t header_length;
    uint16_t gso_size;
    uint16_t checksum_start;
    uint16_t checksum_offset;
    uint16_t num_buffers;
};
static_assert(sizeof(VirtioNetHeader) == Tap::VIRTIO_NET_HEADER_SIZE);
inline constexpr size_t NET_HEADER_NUM_BUFFERS_OFFSET = 10;

struct NetDeviceOptions {
    MacAddress mac {};
    std::optional<RateLimiter> rx_rate_limiter;
    std::optional<RateLimiter> tx_rate_limiter;
};

// The network device's saved state (docs/ARCHITECTURE.md "Saved state"):
//   - offered_features: a fingerprint of the configuration;
//   - mac: the configuration space (the rest of it is constant); a restore onto a device with
//     another MAC is refused, since the guest's network stack has the saved one;
//   - active: negotiated features and both queues' progress.
// Receive chains the device holds ahead of a frame (m_rx_held) hold nothing yet: they are the
// last chains popped from the receive ring, in ring order, so the state gives them back to the
// available side (next_available moved back over them, their heads not held) and the restored
// device pops them again, re-checking them in guest memory as for any chain.
// Deliberately not saved: a frame read from the TAP and not yet delivered (m_pending_length,
// host data in a host buffer) is dropped, as a full TAP queue would drop it; refusing instead
// would let a guest that posts no receive buffers block every snapshot. The TAP and the rate
// limiters belong to the configuration (the limiters' owner saves their buckets); transmit
// chains are never held (a deferred one is back on the ring); the counters are metrics.
struct NetState {
    static constexpr std::string_view SECTION = "virtio-net";
    static constexpr uint32_t VERSION = 1;

    uint64_t offered_features { 0 };
    MacAddress mac {};
    std::optional<ActiveDeviceState> active;

    bool operator==(NetState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<NetState> decode(StateReader& reader);
};

class NetDevice final : public VirtioDeviceBase {
public:
    static constexpr size_t RX_QUEUE = 0;
    static constexpr size_t TX_QUEUE = 1;
    static constexpr uint16_t QUEUE_SIZE = 256;
    // The virtio-net header, a 64 KiB GSO packet and an Ethernet header with an 802.1Q tag:
    // the largest frame either direction carries.
    static constexpr size_t MAX_FRAME_SIZE = Tap::VIRTIO_NET_HEADER_SIZE + 64 * 1024 + 18;
    // Frames handled per event before the loop serves other fds (fairness between devices).
    static constexpr unsigned MAX_FRAMES_PER_BATCH = 256;
    // Transmit: frames and bytes per turn before the queue asks for another (work_budget.h).
    static constexpr uint64_t MAX_TRANSMIT_BYTES_PER_WAKEUP = 4ull << 20;

    // Registers the rate limiters' timer fds in `event_loop` (the TAP fd is registered at
    // activation). `event_loop` must outlive the device.
    static Expected<std::unique_ptr<NetDevice>> create(Tap tap, NetDeviceOptions options, EventLoop& event_loop);
    ~NetDevice() override;
    NetDevice(NetDevice const&) = delete;
    NetDevice& operator=(NetDevice const&) = delete;

    DeviceType type() const override { return DeviceType::Net; }
    uint64_t features() const override;
    std::span<uint16_t const> queue_max_sizes() const override { return m_queue_sizes; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Expected<void> activate(ActivationContext context) override;
    void process_queue(size_t index) override;
    void reset() override;

    Tap const& tap() const { return m_tap; }
    MacAddress const& mac() const { return m_mac; }

    // Saved state (net_device_state.cc), event-loop thread. restore() puts a device that is not
    // active back where the saved one was (`context` present exactly when it was active) and
    // asks for a turn of both queues (ActivationContext::reschedule); a refusal changes nothing
    // but, when the TAP itself refuses the saved offloads, the TAP's offload setting.
    NetState save() const;
    Expected<void> restore(NetState const& state, std::optional<ActivationContext> context);
    Expected<void> save_state(StateWriter& writer) const override;
    Expected<void> restore_state(StateReader& reader, std::optional<ActivationContext> context) override;

    // Counters for the metrics layer. Bytes count Ethernet frames, without the virtio-net header.
    uint64_t rx_packets() const { return m_rx_packets; }
    uint64_t rx_bytes() const { return m_rx_bytes; }
    uint64_t rx_drops() const { return m_rx_drops; }
    uint64_t tx_packets() const { return m_tx_packets; }
    uint64_t tx_bytes() const { return m_tx_bytes; }
    uint64_t tx_drops() const { return m_tx_drops; }
    // Times a frame had to wait for a rate limiter, and for a writable TAP.
    // The limiters given in NetDeviceOptions, if any; their update() changes the limits of a
    // running device (each limiter's timer resumes its direction). Event-loop thread only.
    RateLimiter* rx_rate_limiter() { return m_rx_limiter ? &*m_rx_limiter : nullptr; }
    RateLimiter* tx_rate_limiter() { return m_tx_limiter ? &*m_tx_limiter : nullptr; }
    uint64_t rx_rate_limited() const { return m_rx_rate_limited; }
    uint64_t tx_rate_limited() const { return m_tx_rate_limited; }
    uint64_t tx_would_block() const { return m_tx_would_block; }
    std::vector<Counter> counters() const override {
        return { { "rx_packets", m_rx_packets },
                 { "rx_bytes", m_rx_bytes },
                 { "rx_drops", m_rx_drops },
                 { "tx_packets", m_tx_packets },
                 { "tx_bytes", m_tx_bytes },
                 { "tx_drops", m_tx_drops },
                 { "rx_rate_limited", m_rx_rate_limited },
                 { "tx_rate_limited", m_tx_rate_limited },
                 { "tx_would_block", m_tx_would_block },
                 { "tx_budget_yields", budget_yields() } };
    }

private:
    NetDevice(Tap tap, NetDeviceOptions options, EventLoop& event_loop);

    // Event-loop thread.
    void on_tap_ready(uint32_t ready);
    void on_rx_timer();
    void on_tx_timer();
    void run(Expected<void> (NetDevice::*step)());
    Expected<void> transmit();
    Expected<void> receive();
    Expected<bool> hold_rx_chain();
    Expected<bool> deliver_pending(bool& used_any);
    Expected<void> update_tap_interest();
    void stop();
    void on_failed() override { stop(); }
    std::string log_name() const override { return "virtio-net " + m_tap.name(); }

    Tap m_tap;
    MacAddress m_mac;
    std::optional<RateLimiter> m_rx_limiter;
    std::optional<RateLimiter> m_tx_limiter;
    EventLoop& m_event_loop;
    uint16_t m_queue_sizes[2] { QUEUE_SIZE, QUEUE_SIZE };
    std::array<uint8_t, NET_CONFIG_SIZE> m_config {};

    bool m_merge_rx_buffers { false };
    bool m_tap_registered { false };
    uint32_t m_tap_interest { 0 };
    bool m_rx_wanted { false };  // receive buffers may be available and no limiter is blocking
    bool m_tx_blocked { false }; // the TAP returned EAGAIN; waiting for EPOLLOUT
    DescriptorChain m_tx_chain;
    std::vector<iovec> m_tx_pieces;
    // Receive chains popped ahead of a frame and not yet used (their writable bytes summed):
    // the device keeps them rather than putting them back, so that it has seen the whole
    // available ring when it asks for a notification (2.7.10 avail_event).
    std::vector<DescriptorChain> m_rx_chains;
    size_t m_rx_held { 0 };
    uint64_t m_rx_held_capacity { 0 };
    std::vector<std::byte> m_frame;   // scratch for one received frame
    size_t m_pending_length { 0 };    // bytes of m_frame waiting for the guest; 0: none
    bool m_pending_charged { false }; // the rx limiter already accepted the pending frame

    uint64_t m_rx_packets { 0 };
    uint64_t m_rx_bytes { 0 };
    uint64_t m_rx_drops { 0 };
    uint64_t m_tx_packets { 0 };
    uint64_t m_tx_bytes { 0 };
    uint64_t m_tx_drops { 0 };
    uint64_t m_rx_rate_limited { 0 };
    uint64_t m_tx_rate_limited { 0 };
    uint64_t m_tx_would_block { 0 };
};

} // namespace kvmm::virtio

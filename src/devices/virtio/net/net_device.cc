#include "devices/virtio/net/net_device.h"

#include "devices/virtio/config_space.h"
#include "devices/virtio/work_budget.h"

#include "backends/net/offloads.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <cstring>

namespace kvmm::virtio {

namespace {

constexpr size_t HEADER_SIZE = Tap::VIRTIO_NET_HEADER_SIZE;

void put_le16(uint8_t* destination, uint16_t value) {
    destination[0] = static_cast<uint8_t>(value);
    destination[1] = static_cast<uint8_t>(value >> 8);
}

} // namespace

Expected<std::unique_ptr<NetDevice>> NetDevice::create(Tap tap, NetDeviceOptions options, EventLoop& event_loop) {
    // Any address is reported to the guest as configured, a group (multicast) one too, as
    // Firecracker does; what the guest's driver makes of it is the guest's affair.
    std::unique_ptr<NetDevice> device(new NetDevice(std::move(tap), std::move(options), event_loop));
    // The timer fds stay registered for the device's lifetime: they are readable only after a
    // limiter refused something, so they cost nothing otherwise.
    if (device->m_rx_limiter)
        TRY(event_loop.add(device->m_rx_limiter->timer_fd(), [raw = device.get()] { raw->on_rx_timer(); }));
    if (device->m_tx_limiter) {
        auto added = event_loop.add(device->m_tx_limiter->timer_fd(), [raw = device.get()] { raw->on_tx_timer(); });
        if (!added) {
            if (device->m_rx_limiter)
                event_loop.remove(device->m_rx_limiter->timer_fd());
            return added.error();
        }
    }
    return device;
}

NetDevice::NetDevice(Tap tap, NetDeviceOptions options, EventLoop& event_loop)
    : m_tap(std::move(tap)), m_mac(options.mac), m_rx_limiter(std::move(options.rx_rate_limiter)),
      m_tx_limiter(std::move(options.tx_rate_limiter)), m_event_loop(event_loop), m_frame(MAX_FRAME_SIZE) {
    // 5.1.4: the configuration space never changes, so vCPU threads read it without a lock.
    std::copy(m_mac.begin(), m_mac.end(), m_config.begin() + NET_CONFIG_MAC_OFFSET);
    put_config<NET_CONFIG_STATUS_OFFSET>(m_config, NET_STATUS_LINK_UP);
    put_config<NET_CONFIG_MAX_VIRTQUEUE_PAIRS_OFFSET>(m_config, uint16_t { 1 });
    m_tx_pieces.reserve(QUEUE_SIZE);
}

NetDevice::~NetDevice() {
    stop();
    if (m_rx_limiter)
        m_event_loop.remove(m_rx_limiter->timer_fd());
    if (m_tx_limiter)
        m_event_loop.remove(m_tx_limiter->timer_fd());
}

uint64_t NetDevice::features() const {
    using namespace net_feature;
    uint64_t features = feature_bit(FEATURE_RING_INDIRECT_DESC) | feature_bit(FEATURE_RING_EVENT_IDX);
    for (unsigned const bit : { CSUM, GUEST_CSUM, MAC, GUEST_TSO4, GUEST_TSO6, GUEST_ECN, GUEST_UFO, HOST_TSO4,
                                HOST_TSO6, HOST_ECN, HOST_UFO, MRG_RXBUF, STATUS })
        features |= feature_bit(bit);
    return features;
}

void NetDevice::read_config(uint64_t offset, std::span<uint8_t> data) { read_config_window(m_config, offset, data); }

Expected<void> NetDevice::activate(ActivationContext context) {
    if (context.queues.size() < 2 || !context.queues[RX_QUEUE] || !context.queues[TX_QUEUE])
        return Error("virtio-net needs both its receive and transmit queues set up");
    // The kernel may hand the TAP only the offloaded frames the guest said it can take.
    TRY(m_tap.set_offloads(tun_offloads_for_guest_features(context.features)));
    stop();
    m_merge_rx_buffers = has_feature(context.features, net_feature::MRG_RXBUF);
    TRY(m_event_loop.add(m_tap.fd(), 0, [this](uint32_t ready) { on_tap_ready(ready); }));
    m_tap_registered = true;
    take_context(std::move(context));
    // The transport polls every queue after activation; receive starts from there.
    return {};
}

void NetDevice::reset() { stop(); }

void NetDevice::stop() {
    if (m_tap_registered)
        m_event_loop.remove(m_tap.fd());
    m_tap_registered = false;
    m_tap_interest = 0;
    drop_context();
    m_rx_wanted = false;
    m_tx_blocked = false;
    m_rx_held = 0;
    m_rx_held_capacity = 0;
    m_pending_length = 0;
    m_pending_charged = false;
}

void NetDevice::process_queue(size_t index) {
    if (index == RX_QUEUE) {
        // New receive buffers: read from the TAP again.
        m_rx_wanted = true;
        run(&NetDevice::receive);
    } else if (index == TX_QUEUE) {
        run(&NetDevice::transmit);
    }
}

void NetDevice::on_tap_ready(uint32_t ready) {
    if (ready & EventLoop::WRITABLE) {
        m_tx_blocked = false;
        run(&NetDevice::transmit);
    }
    if (ready & EventLoop::READABLE)
        run(&NetDevice::receive);
}

void NetDevice::on_rx_timer() {
    m_rx_limiter->on_timer();
    m_rx_wanted = true;
    run(&NetDevice::receive);
}

void NetDevice::on_tx_timer() {
    m_tx_limiter->on_timer();
    run(&NetDevice::transmit);
}

void NetDevice::run(Expected<void> (NetDevice::*step)()) {
    // A ring-level violation (or a lost epoll registration): DEVICE_NEEDS_RESET, once.
    if (active())
        fail_on_error((this->*step)());
}

Expected<void> NetDevice::update_tap_interest() {
    uint32_t const interest = (m_rx_wanted ? EventLoop::READABLE : 0u) | (m_tx_blocked ? EventLoop::WRITABLE : 0u);
    if (!m_tap_registered || interest == m_tap_interest)
        return {};
    TRY(m_event_loop.modify(m_tap.fd(), interest));
    m_tap_interest = interest;
    return {};
}

Expected<void> NetDevice::transmit() {
    if (m_tx_blocked)
        return {}; // the TAP's EPOLLOUT resumes us
    auto& queue = *context().queues[TX_QUEUE];
    auto const& memory = *context().memory;
    bool used_any = false;
    // A driver that keeps re-posting frames must not keep the loop here (work_budget.h).
    WorkBudget slice(WorkBudget::DEFAULT_CHAINS, MAX_TRANSMIT_BYTES_PER_WAKEUP);
    while (true) {
        if (slice.exhausted()) {
            yield_turn(TX_QUEUE);
            break;
        }
        if (!TRY(queue.pop_or_enable_notifications(m_tx_chain)))
            break;
        uint64_t const length = m_tx_chain.readable_length();
        slice.charge_chain();
        slice.charge_bytes(length);
        if (length < HEADER_SIZE || length > MAX_FRAME_SIZE) {
            ++m_tx_drops;
            guest_error(fmt::format("dropped a transmit chain of {} bytes (a frame is {} to {} bytes)", length,
                                    HEADER_SIZE, MAX_FRAME_SIZE));
            TRY(queue.add_used(m_tx_chain.head(), 0));
            used_any = true;
            continue;
        }
        m_tx_pieces.clear();
        for (auto const& segment : m_tx_chain.readable()) {
            TRY(memory.host_ranges(segment.address, segment.length, m_tx_pieces));
            if (m_tx_pieces.size() > IOV_MAX)
                break;
        }
        if (m_tx_pieces.size() > IOV_MAX) {
            ++m_tx_drops;
            guest_error(fmt::format("dropped a transmit chain in more than {} pieces", IOV_MAX));
            TRY(queue.add_used(m_tx_chain.head(), 0));
            used_any = true;
            continue;
        }
        uint64_t const frame_bytes = length - HEADER_SIZE;
        if (m_tx_limiter && !m_tx_limiter->consume(frame_bytes)) {
            // The limiter's timer resumes transmission.
            queue.undo_pop(m_tx_chain);
            ++m_tx_rate_limited;
            break;
        }
        auto const written = m_tap.write(m_tx_pieces);
        if (!written) {
            // The kernel refused the frame itself (EINVAL for an inconsistent GSO header,
            // EIO while the interface is down): the guest's packet is lost, the device goes on.
            ++m_tx_drops;
            guest_error(fmt::format("the TAP refused a frame of {} bytes: {}", length, written.error().message()));
        } else if (!*written) {
            queue.undo_pop(m_tx_chain);
            ++m_tx_would_block;
            m_tx_blocked = true;
            break;
        } else {
            ++m_tx_packets;
            m_tx_bytes += frame_bytes;
        }
        // 5.1.6.2: transmit buffers are read-only to the device; nothing was written.
        TRY(queue.add_used(m_tx_chain.head(), 0));
        used_any = true;
    }
    TRY(update_tap_interest());
    if (used_any)
        TRY(interrupt_if_wanted(queue));
    return {};
}

Expected<bool> NetDevice::hold_rx_chain() {
    auto& queue = *context().queues[RX_QUEUE];
    if (m_rx_held == queue.size())
        return false;
    if (m_rx_held == m_rx_chains.size())
        m_rx_chains.emplace_back();
    // Every available chain has been popped when this finds none, so avail_event then asks
    // for the next one.
    if (!TRY(queue.pop_or_enable_notifications(m_rx_chains[m_rx_held])))
        return false;
    m_rx_held_capacity += m_rx_chains[m_rx_held].writable_length();
    ++m_rx_held;
    return true;
}

Expected<void> NetDevice::receive() {
    auto& queue = *context().queues[RX_QUEUE];
    bool used_any = false;
    for (unsigned frames = 0; frames < MAX_FRAMES_PER_BATCH && m_rx_wanted; ++frames) {
        if (m_pending_length == 0) {
            // Read only with somewhere to put the frame: otherwise it waits in the TAP's queue.
            if (m_rx_held == 0 && !TRY(hold_rx_chain())) {
                m_rx_wanted = false;
                break;
            }
            iovec const whole { m_frame.data(), m_frame.size() };
            auto const got = m_tap.read(std::span(&whole, 1));
            if (!got) {
                // A host-side failure, not the guest's: stop reading until the guest posts buffers.
                guest_error(fmt::format("reading the TAP failed: {}", got.error().message()));
                m_rx_wanted = false;
                break;
            }
            if (!*got)
                break; // nothing queued: EPOLLIN brings us back
            if (**got < HEADER_SIZE) {
                ++m_rx_drops;
                continue;
            }
            m_pending_length = **got;
            m_pending_charged = false;
        }
        if (m_rx_limiter && !m_pending_charged) {
            if (!m_rx_limiter->consume(m_pending_length - HEADER_SIZE)) {
                ++m_rx_rate_limited;
                m_rx_wanted = false; // the limiter's timer resumes us
                break;
            }
            m_pending_charged = true;
        }
        if (!TRY(deliver_pending(used_any))) {
            m_rx_wanted = false; // the driver's next notification on queue 0 resumes us
            break;
        }
    }
    TRY(update_tap_interest());
    if (used_any)
        TRY(interrupt_if_wanted(queue));
    return {};
}

Expected<bool> NetDevice::deliver_pending(bool& used_any) {
    auto& queue = *context().queues[RX_QUEUE];
    auto const& memory = *context().memory;
    size_t const length = m_pending_length;
    while (m_rx_held_capacity < length) {
        // Without MRG_RXBUF one chain must hold the whole frame (5.1.6.3.1); with it the frame
        // may take every chain of the ring, and one that does not fit even then never will.
        bool const hopeless = (!m_merge_rx_buffers && m_rx_held > 0) || m_rx_held == queue.size();
        if (hopeless) {
            ++m_rx_drops;
            guest_error(fmt::format("dropped a received frame of {} bytes: the receive buffers hold {}", length,
                                    m_rx_held_capacity));
            m_pending_length = 0;
            m_pending_charged = false;
            return true;
        }
        if (!TRY(hold_rx_chain()))
            return false;
    }
    // How many chains the frame takes; then num_buffers goes into the header before the copy.
    size_t chains = 0;
    for (uint64_t capacity = 0; capacity < length; ++chains)
        capacity += m_rx_chains[chains].writable_length();
    chains = std::max<size_t>(chains, 1);
    put_le16(reinterpret_cast<uint8_t*>(m_frame.data()) + NET_HEADER_NUM_BUFFERS_OFFSET, static_cast<uint16_t>(chains));
    auto remaining = std::span<std::byte const>(m_frame).first(length);
    for (size_t i = 0; i < chains; ++i) {
        size_t const written = TRY(m_rx_chains[i].write(memory, 0, remaining));
        remaining = remaining.subspan(written);
        TRY(queue.add_used(m_rx_chains[i].head(), static_cast<uint32_t>(written)));
        m_rx_held_capacity -= m_rx_chains[i].writable_length();
    }
    // The chains not needed stay held for the next frame, in ring order.
    for (size_t i = chains; i < m_rx_held; ++i)
        std::swap(m_rx_chains[i - chains], m_rx_chains[i]);
    m_rx_held -= chains;
    used_any = true;
    ++m_rx_packets;
    m_rx_bytes += length - HEADER_SIZE;
    m_pending_length = 0;
    m_pending_charged = false;
    return true;
}

} // namespace kvmm::virtio

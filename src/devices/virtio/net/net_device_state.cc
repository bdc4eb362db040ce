// The network device's saved state: NetState, NetDevice::save and NetDevice::restore.
#include "devices/virtio/net/net_device.h"

#include <algorithm>
#include <cstring>

namespace kvmm::virtio {

void NetState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u64(offered_features);
    writer.bytes(std::span<uint8_t const>(mac));
    encode_active_state(writer, active);
    writer.end_section();
}

Expected<NetState> NetState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    NetState state;
    state.offered_features = TRY(reader.u64("offered_features"));
    auto const mac = TRY(reader.bytes("mac", state.mac.size()));
    if (mac.size() != state.mac.size())
        return Error::format("saved state {}/mac: {} bytes, a MAC address has {}", SECTION, mac.size(),
                             state.mac.size());
    std::memcpy(state.mac.data(), mac.data(), state.mac.size());
    std::array<uint16_t, 2> const queue_sizes { NetDevice::QUEUE_SIZE, NetDevice::QUEUE_SIZE };
    state.active = TRY(decode_active_state(reader, queue_sizes));
    TRY(reader.end_section());
    return state;
}

NetState NetDevice::save() const {
    NetState state { features(), m_mac, std::nullopt };
    if (!active())
        return state;
    auto active = save_active_state(context());
    // The held receive chains are the last m_rx_held popped, in ring order: give them back.
    auto& rx = *active.queues[RX_QUEUE];
    rx.next_available = static_cast<uint16_t>(rx.next_available - m_rx_held);
    for (size_t i = 0; i < m_rx_held; ++i)
        std::erase(rx.in_flight_heads, m_rx_chains[i].head());
    state.active = std::move(active);
    return state;
}

Expected<void> NetDevice::restore(NetState const& state, std::optional<ActivationContext> context) {
    constexpr std::string_view section = NetState::SECTION;
    if (active())
        return Error::format("virtio-net {}: restoring into a device that is active; reset it first", m_tap.name());
    if (state.mac != m_mac)
        return Error::format("saved state {}/mac: the saved device had {}, this one has {}", section,
                             format_mac_address(state.mac), format_mac_address(m_mac));
    TRY(check_no_held_heads(section, state.active, RX_QUEUE));
    TRY(check_no_held_heads(section, state.active, TX_QUEUE));
    TRY(check_and_restore_queues(section, state.offered_features, features(), state.active, context));
    if (!context)
        return {};
    // The TAP learns the guest's offloads as at activation; that is the only step that can fail.
    TRY(activate(std::move(*context)).with_context(fmt::format("virtio-net {}: restoring", m_tap.name())));
    if (auto& restored = VirtioDeviceBase::context(); restored.reschedule) {
        restored.reschedule(RX_QUEUE);
        restored.reschedule(TX_QUEUE);
    }
    return {};
}

Expected<void> NetDevice::save_state(StateWriter& writer) const {
    save().encode(writer);
    return {};
}

Expected<void> NetDevice::restore_state(StateReader& reader, std::optional<ActivationContext> context) {
    auto const state = TRY(NetState::decode(reader));
    return restore(state, std::move(context));
}

} // namespace kvmm::virtio

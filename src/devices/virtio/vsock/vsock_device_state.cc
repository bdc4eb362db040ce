// The vsock device's saved state: VsockState, VsockDevice::save and VsockDevice::restore, and
// the transport reset a restored device owes its guest.
#include "devices/virtio/vsock/vsock_device.h"

#include <array>
#include <cstdint>
#include <cstring>

namespace kvmm::virtio::vsock {

void VsockState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u64(offered_features);
    writer.u64(guest_cid);
    encode_active_state(writer, active);
    writer.end_section();
}

Expected<VsockState> VsockState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    VsockState state;
    state.offered_features = TRY(reader.u64("offered_features"));
    // 5.10.4: CIDs 0-2 are reserved; drivers assume 32 bits.
    state.guest_cid = TRY(reader.u64_in_range("guest_cid", HOST_CID + 1, UINT32_MAX));
    std::array<uint16_t, 3> const queue_sizes { VsockDevice::QUEUE_SIZE, VsockDevice::QUEUE_SIZE,
                                                VsockDevice::QUEUE_SIZE };
    state.active = TRY(decode_active_state(reader, queue_sizes));
    TRY(reader.end_section());
    return state;
}

VsockState VsockDevice::save() const {
    VsockState state { features(), m_guest_cid, std::nullopt };
    if (active())
        state.active = save_active_state(context());
    return state;
}

Expected<void> VsockDevice::restore(VsockState const& state, std::optional<ActivationContext> context) {
    constexpr std::string_view section = VsockState::SECTION;
    if (active())
        return Error::format("virtio-vsock cid {}: restoring into a device that is active; reset it first",
                             m_guest_cid);
    if (state.guest_cid != m_guest_cid)
        return Error::format("saved state {}/guest_cid: the saved device had cid {}, this one has {}", section,
                             state.guest_cid, m_guest_cid);
    for (size_t queue : { RX_QUEUE, TX_QUEUE, EVENT_QUEUE })
        TRY(check_no_held_heads(section, state.active, queue));
    TRY(check_and_restore_queues(section, state.offered_features, features(), state.active, context));
    if (context && (!context->queues[RX_QUEUE] || !context->queues[TX_QUEUE] || !context->reschedule))
        return Error::format("saved state {}/queues: the rx and tx queues must be set up and reschedulable", section);

    // Nothing below can fail. Host sockets of this device (none on a device that was never
    // active) go: the guest is about to drop its side of every connection.
    reset();
    if (!context)
        return {};
    take_context(std::move(*context));
    m_transport_reset_pending = true;
    for (size_t queue : { EVENT_QUEUE, RX_QUEUE, TX_QUEUE })
        VirtioDeviceBase::context().reschedule(queue);
    return {};
}

Expected<void> VsockDevice::save_state(StateWriter& writer) const {
    save().encode(writer);
    return {};
}

Expected<void> VsockDevice::restore_state(StateReader& reader, std::optional<ActivationContext> context) {
    auto const state = TRY(VsockState::decode(reader));
    return restore(state, std::move(context));
}

Expected<void> VsockDevice::send_transport_reset() {
    if (context().queues.size() <= EVENT_QUEUE || !context().queues[EVENT_QUEUE]) {
        // Without an event queue there is no way to tell the guest; its connections then end
        // as they would with a peer that went away (RST on their next packet).
        m_transport_reset_pending = false;
        guest_error("no event queue is set up; the guest is not told of the transport reset");
        return {};
    }
    auto& queue = *context().queues[EVENT_QUEUE];
    // struct virtio_vsock_event { le32 id; }; x86-64 is little-endian.
    std::array<std::byte, sizeof(uint32_t)> event;
    std::memcpy(event.data(), &EVENT_TRANSPORT_RESET, event.size());
    bool used_any = false;
    // Each turn of the loop uses up one buffer, so it ends within the queue's size.
    while (m_transport_reset_pending) {
        if (!TRY(queue.pop_or_enable_notifications(m_event_chain)))
            break; // the driver's next event buffer brings us back
        size_t const written = TRY(m_event_chain.write(*context().memory, 0, event));
        if (written < event.size()) {
            guest_error(fmt::format("event buffer of {} bytes cannot hold a {}-byte event; returned empty",
                                    m_event_chain.writable_length(), event.size()));
            TRY(queue.add_used(m_event_chain.head(), 0));
        } else {
            TRY(queue.add_used(m_event_chain.head(), static_cast<uint32_t>(written)));
            m_transport_reset_pending = false;
            ++m_transport_resets_sent;
        }
        used_any = true;
    }
    if (used_any)
        TRY(interrupt_if_wanted(queue));
    return {};
}

} // namespace kvmm::virtio::vsock

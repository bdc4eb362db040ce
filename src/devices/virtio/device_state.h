// What every virtio device's saved state shares (docs/ARCHITECTURE.md "Saved state"): the
// features the device offered (a fingerprint of its configuration, so a state is refused by a
// device configured differently) and, when the driver had activated it, the negotiated
// features and one QueueState per queue (absent where the driver did not set the queue up).
// Each device embeds these in its own section, between its own fields.
//
// Threading: plain values and pure functions; a device calls them on its event-loop thread.
#pragma once

#include "base/error.h"
#include "base/expected.h"
#include "base/state_io.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_device.h"
#include "devices/virtio/virtio_spec.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace kvmm::virtio {

// A device's driver-facing state while it is active.
struct ActiveDeviceState {
    uint64_t features { 0 };
    std::vector<std::optional<QueueState>> queues; // one entry per queue the device offers

    bool operator==(ActiveDeviceState const&) const = default;
};

// The features and queues of a running device, as its ActivationContext holds them now.
inline ActiveDeviceState save_active_state(ActivationContext const& context) {
    ActiveDeviceState state { context.features, {} };
    for (auto const& queue : context.queues)
        state.queues.push_back(queue ? std::optional(queue->save()) : std::nullopt);
    return state;
}

inline void encode_active_state(StateWriter& writer, std::optional<ActiveDeviceState> const& state) {
    writer.boolean(state.has_value());
    if (!state)
        return;
    writer.u64(state->features);
    writer.u64(state->queues.size());
    for (auto const& queue : state->queues) {
        writer.boolean(queue.has_value());
        if (queue)
            queue->encode(writer);
    }
}

// `queue_max_sizes` is the device's list: it fixes the number of queues and bounds each one's
// list of held heads (the exact size comes back from the transport at restore).
inline Expected<std::optional<ActiveDeviceState>> decode_active_state(StateReader& reader,
                                                                      std::span<uint16_t const> queue_max_sizes) {
    if (!TRY(reader.boolean("active")))
        return std::optional<ActiveDeviceState> {};
    ActiveDeviceState state;
    state.features = TRY(reader.u64("features"));
    TRY(reader.u64_in_range("queues", queue_max_sizes.size(), queue_max_sizes.size()));
    for (uint16_t const max_size : queue_max_sizes) {
        if (TRY(reader.boolean("queue_present")))
            state.queues.emplace_back(TRY(QueueState::decode(reader, max_size)));
        else
            state.queues.emplace_back(std::nullopt);
    }
    return std::optional(std::move(state));
}

// Checks a saved device state against the device it is restored into and the context the
// transport built for it, and restores each queue's progress into the context's queues (which
// belong to the caller until the device takes the context, so a refusal changes nothing the
// device owns). `section` names the device in messages, as the reader does.
//   - the offered features must be the same: the device was built from the same configuration;
//   - a context must be given exactly when the saved device was active;
//   - the negotiated features must be the transport's and a subset of what was offered;
//   - the same queues must be set up, and each queue's state must fit its restored size.
inline Expected<void> check_and_restore_queues(std::string_view section, uint64_t saved_offered,
                                               uint64_t device_offered, std::optional<ActiveDeviceState> const& saved,
                                               std::optional<ActivationContext>& context) {
    if (saved_offered != device_offered)
        return Error::format("saved state {}/offered_features: the saved device offered {:#x}, this one offers {:#x} "
                             "(a device configured differently)",
                             section, saved_offered, device_offered);
    if (saved.has_value() != context.has_value())
        return Error::format("saved state {}/active: the saved device was {}, but the transport restores it {}",
                             section, saved ? "active" : "not active", context ? "active" : "not active");
    if (!saved)
        return {};
    uint64_t const allowed = device_offered | feature_bit(FEATURE_VERSION_1);
    if ((saved->features & ~allowed) != 0)
        return Error::format("saved state {}/features: {:#x} has bits this device does not offer ({:#x})", section,
                             saved->features, allowed);
    if (saved->features != context->features)
        return Error::format("saved state {}/features: {:#x}, but the transport negotiated {:#x}", section,
                             saved->features, context->features);
    if (context->queues.size() != saved->queues.size())
        return Error::format("saved state {}/queues: {} queues saved, the transport restores {}", section,
                             saved->queues.size(), context->queues.size());
    for (size_t i = 0; i < saved->queues.size(); ++i) {
        auto const& queue_state = saved->queues[i];
        auto& queue = context->queues[i];
        if (queue_state.has_value() != queue.has_value())
            return Error::format("saved state {}/queue{}: saved {}, but the transport restores it {}", section, i,
                                 queue_state ? "set up" : "unused", queue ? "set up" : "unused");
        if (queue_state)
            TRY(queue->restore(*queue_state).with_context(fmt::format("saved state {}/queue{}", section, i)));
    }
    return {};
}

// For devices that hold no chain between event-loop turns: a state that lists held heads on
// `queue` would leave those buffers with the driver for ever, so it is refused.
inline Expected<void> check_no_held_heads(std::string_view section, std::optional<ActiveDeviceState> const& saved,
                                          size_t queue) {
    if (!saved || queue >= saved->queues.size() || !saved->queues[queue])
        return {};
    size_t const held = saved->queues[queue]->in_flight_heads.size();
    if (held != 0)
        return Error::format("saved state {}/queue{}.in_flight_heads: {} heads, but this device holds none between "
                             "requests",
                             section, queue, held);
    return {};
}

} // namespace kvmm::virtio

// The balloon's saved state: BalloonState, BalloonDevice::save and BalloonDevice::restore.
#include "devices/virtio/balloon/balloon_device.h"

namespace kvmm::virtio {

void BalloonState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u64(offered_features);
    writer.u32(target_pages);
    writer.u32(actual_pages);
    writer.u32(config_generation);
    writer.u64(stats_interval_ms);
    auto const& values = statistics.values();
    writer.u64(values.size());
    for (auto const& value : values) {
        writer.boolean(value.has_value());
        writer.u64(value.value_or(0));
    }
    writer.u64(statistics.updates());
    encode_active_state(writer, active);
    writer.boolean(held_stats_head.has_value());
    writer.u16(held_stats_head.value_or(0));
    writer.end_section();
}

Expected<BalloonState> BalloonState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    BalloonState state;
    state.offered_features = TRY(reader.u64("offered_features"));
    state.target_pages = TRY(reader.u32("target_pages"));
    state.actual_pages = TRY(reader.u32("actual_pages"));
    state.config_generation = TRY(reader.u32("config_generation"));
    state.stats_interval_ms = TRY(reader.u64_in_range("stats_interval_ms", 0, MAX_STATS_INTERVAL_MS));
    BalloonStatistics::Values values {};
    TRY(reader.u64_in_range("statistics", values.size(), values.size()));
    for (auto& value : values) {
        bool const present = TRY(reader.boolean("statistic_present"));
        uint64_t const number = TRY(reader.u64("statistic"));
        if (present)
            value = number;
    }
    uint64_t const updates = TRY(reader.u64("statistics_updates"));
    state.statistics = BalloonStatistics::from(values, updates);
    std::array<uint16_t, 4> const queue_sizes { BalloonDevice::QUEUE_SIZE, BalloonDevice::QUEUE_SIZE,
                                                BalloonDevice::QUEUE_SIZE, BalloonDevice::QUEUE_SIZE };
    state.active = TRY(decode_active_state(reader, queue_sizes));
    bool const holds = TRY(reader.boolean("held_stats_head_present"));
    uint16_t const head = TRY(reader.u16("held_stats_head"));
    if (holds)
        state.held_stats_head = head;
    TRY(reader.end_section());
    return state;
}

BalloonState BalloonDevice::save() const {
    BalloonState state;
    state.offered_features = features();
    {
        MutexLock guard(m_lock);
        state.target_pages = m_num_pages;
        state.actual_pages = m_actual_pages;
        state.config_generation = m_generation;
        state.stats_interval_ms = static_cast<uint64_t>(m_stats_interval.count());
        state.statistics = m_statistics;
    }
    if (active())
        state.active = save_active_state(context());
    state.held_stats_head = m_held_stats_head;
    return state;
}

Expected<void> BalloonDevice::restore(BalloonState const& state, std::optional<ActivationContext> context) {
    constexpr std::string_view section = BalloonState::SECTION;
    if (active())
        return Error("virtio-balloon: restoring into a device that is active; reset it first");
    TRY(check_and_restore_queues(section, state.offered_features, features(), state.active, context));
    QueueRoles assigned;
    if (context)
        assigned = TRY(assign_roles(*context).with_context(fmt::format("saved state {}/queues", section)));
    // The device holds at most the one stats buffer, and only that: any other held head
    // would never be returned.
    for (size_t i = 0; state.active && i < QUEUE_COUNT; ++i) {
        auto const& queue = state.active->queues[i];
        size_t const held = queue ? queue->in_flight_heads.size() : 0;
        bool const stats = assigned.stats_queue == i;
        size_t const expected = stats && state.held_stats_head ? 1 : 0;
        if (held != expected)
            return Error::format("saved state {}/queue{}.in_flight_heads: {} heads, but the device holds {} there",
                                 section, i, held, expected);
        if (expected && queue->in_flight_heads[0] != *state.held_stats_head)
            return Error::format("saved state {}/held_stats_head: {} is not the stats queue's held head {}", section,
                                 *state.held_stats_head, queue->in_flight_heads[0]);
    }
    if (state.held_stats_head && !assigned.stats_queue)
        return Error::format("saved state {}/held_stats_head: {} is set, but no stats queue is in use", section,
                             *state.held_stats_head);

    // The timer is the only step that can fail; everything after it cannot.
    TRY(set_stats_interval(std::chrono::milliseconds(static_cast<int64_t>(state.stats_interval_ms))));
    {
        MutexLock guard(m_lock);
        m_num_pages = state.target_pages;
        m_actual_pages = state.actual_pages;
        m_generation = state.config_generation;
        m_statistics = state.statistics;
    }
    if (!context)
        return {};
    m_roles = assigned.roles;
    m_stats_queue = assigned.stats_queue;
    m_held_stats_head = state.held_stats_head;
    take_context(std::move(*context));
    // Buffers the driver offered since the last turn of the saved device are served once the
    // event loop runs devices again.
    if (auto& restored = VirtioDeviceBase::context(); restored.reschedule) {
        for (size_t i = 0; i < QUEUE_COUNT; ++i)
            if (m_roles[i] != Role::None)
                restored.reschedule(i);
    }
    return {};
}

Expected<void> BalloonDevice::save_state(StateWriter& writer) const {
    save().encode(writer);
    return {};
}

Expected<void> BalloonDevice::restore_state(StateReader& reader, std::optional<ActivationContext> context) {
    auto const state = TRY(BalloonState::decode(reader));
    return restore(state, std::move(context));
}

} // namespace kvmm::virtio

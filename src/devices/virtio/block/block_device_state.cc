// The block device's saved state: BlockState, BlockDevice::save and BlockDevice::restore.
#include "devices/virtio/block/block_device.h"

#include <algorithm>

namespace kvmm::virtio {

void BlockState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u64(offered_features);
    writer.u64(capacity_sectors);
    writer.u32(config_generation);
    encode_active_state(writer, active);
    writer.end_section();
}

Expected<BlockState> BlockState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    BlockState state;
    state.offered_features = TRY(reader.u64("offered_features"));
    state.capacity_sectors = TRY(reader.u64("capacity_sectors"));
    state.config_generation = TRY(reader.u32("config_generation"));
    uint16_t const queue_sizes[] { BlockDevice::QUEUE_SIZE };
    state.active = TRY(decode_active_state(reader, queue_sizes));
    TRY(reader.end_section());
    return state;
}

Expected<BlockState> BlockDevice::save() const {
    // Every chain the device pops is answered at once or handed to the engine, so the queue's
    // held chains are exactly the requests on the host.
    size_t const held = active() ? context().queues[0]->in_flight() : 0;
    size_t const on_host = std::max<size_t>(held, m_engine->in_flight());
    if (on_host > 0)
        return Error::format("virtio-blk {}: {} request(s) still in flight on the host; pause the VM and let them "
                             "complete before saving",
                             m_image->path(), on_host);
    BlockState state;
    state.offered_features = m_features;
    state.capacity_sectors = m_capacity_sectors;
    state.config_generation = m_config_generation.load(std::memory_order_acquire);
    if (active())
        state.active = save_active_state(context());
    return state;
}

Expected<void> BlockDevice::restore(BlockState const& state, std::optional<ActivationContext> context) {
    constexpr std::string_view section = BlockState::SECTION;
    if (active())
        return Error::format("virtio-blk {}: restoring into a device that is active; reset it first", m_image->path());
    if (state.capacity_sectors != m_capacity_sectors)
        return Error::format("saved state {}/capacity_sectors: the saved drive has {} sectors, {} has {} (another "
                             "image, or one resized since)",
                             section, state.capacity_sectors, m_image->path(), m_capacity_sectors);
    TRY(check_no_held_heads(section, state.active, 0));
    TRY(check_and_restore_queues(section, state.offered_features, m_features, state.active, context));
    if (context && !context->queues[0])
        return Error::format("saved state {}/queue0: the request queue is not set up", section);

    // Nothing below can fail: the device changes only now.
    m_config_generation.store(state.config_generation, std::memory_order_release);
    if (context) {
        TRY(activate(std::move(*context)));
        // The saved device may have had chains waiting (deferred by a full engine or the
        // limiter); a turn of the queue picks them up once the event loop runs devices again.
        if (VirtioDeviceBase::context().reschedule)
            VirtioDeviceBase::context().reschedule(0);
    }
    return {};
}

Expected<void> BlockDevice::save_state(StateWriter& writer) const {
    auto const state = TRY(save());
    state.encode(writer);
    return {};
}

Expected<void> BlockDevice::restore_state(StateReader& reader, std::optional<ActivationContext> context) {
    auto const state = TRY(BlockState::decode(reader));
    return restore(state, std::move(context));
}

} // namespace kvmm::virtio

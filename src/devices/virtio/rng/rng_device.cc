#include "devices/virtio/rng/rng_device.h"

#include "devices/virtio/config_space.h"
#include "devices/virtio/work_budget.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/random.h>

namespace kvmm::virtio {

namespace {

Expected<void> host_random(std::span<std::byte> destination) {
    size_t done = 0;
    while (done < destination.size()) {
        ssize_t const got = ::getrandom(destination.data() + done, destination.size() - done, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno("getrandom");
        }
        done += static_cast<size_t>(got);
    }
    return {};
}

} // namespace

RngDevice::RngDevice(EntropySource source, Budget budget)
    : m_source(source ? std::move(source) : EntropySource(host_random)), m_budget(std::move(budget)) {}

uint64_t RngDevice::features() const {
    return feature_bit(FEATURE_RING_INDIRECT_DESC) | feature_bit(FEATURE_RING_EVENT_IDX);
}

void RngDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    read_config_window({}, offset, data); // 5.4.4: no configuration space
}

Expected<void> RngDevice::activate(ActivationContext context) {
    if (context.queues.empty() || !context.queues[0])
        return Error("the entropy device's request queue was not set up");
    take_context(std::move(context));
    return {};
}

void RngDevice::reset() { drop_context(); }

Expected<void> RngDevice::save_state(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.boolean(active());
    if (active())
        context().queues[0]->save().encode(writer);
    writer.end_section();
    return {};
}

Expected<void> RngDevice::restore_state(StateReader& reader, std::optional<ActivationContext> context) {
    TRY(reader.begin_section(SECTION, VERSION));
    bool const active = TRY(reader.boolean("active"));
    if (active != context.has_value())
        return Error::format("saved state {}/active: the device was {}, but its transport restores it {}", SECTION,
                             active ? "active" : "inactive", context ? "active" : "inactive");
    if (context) {
        if (context->queues.empty() || !context->queues[0])
            return Error::format("saved state {}: the request queue is not ready", SECTION);
        auto& queue = *context->queues[0];
        auto const state = TRY(QueueState::decode(reader, queue.size()));
        // The device returns every chain within the turn that popped it.
        if (!state.in_flight_heads.empty())
            return Error::format("saved state {}/{}: {} heads held, but this device holds none between turns", SECTION,
                                 QueueState::SECTION, state.in_flight_heads.size());
        if (auto restored = queue.restore(state); !restored)
            return Error::format("saved state {}/{}: {}", SECTION, QueueState::SECTION, restored.error().message());
    }
    TRY(reader.end_section());
    if (context)
        take_context(std::move(*context));
    else
        drop_context();
    return {};
}

void RngDevice::process_queue(size_t index) {
    if (!active() || index != 0)
        return;
    fail_on_error(drain());
}

Expected<void> RngDevice::drain() {
    auto& queue = *context().queues[0];
    auto const& memory = *context().memory;
    bool used_any = false;
    WorkBudget slice;
    while (true) {
        if (slice.exhausted()) {
            // A driver that re-posts buffers as fast as they come back would keep this loop
            // going for ever: take the rest on a later turn of the event loop.
            yield_turn(0);
            break;
        }
        if (!TRY(queue.pop_or_enable_notifications(m_chain)))
            break;
        // 5.4.6.1: the device writes random bytes to the writable buffers. A readable
        // buffer is not forbidden by the specification; it is ignored.
        uint32_t const length =
            static_cast<uint32_t>(std::min<uint64_t>(m_chain.writable_length(), MAX_BYTES_PER_REQUEST));
        if (m_budget && length > 0 && !m_budget(length)) {
            queue.undo_pop(m_chain);
            ++m_requests_deferred;
            if (used_any)
                TRY(interrupt_if_wanted(queue));
            return {};
        }
        m_scratch.resize(length);
        TRY(m_source(m_scratch));
        auto const written = TRY(m_chain.write(memory, 0, m_scratch));
        TRY(queue.add_used(m_chain.head(), static_cast<uint32_t>(written)));
        m_bytes_served += written;
        used_any = true;
        slice.charge_chain();
        slice.charge_bytes(std::max<uint64_t>(length, 1));
    }
    if (used_any)
        TRY(interrupt_if_wanted(queue));
    return {};
}

} // namespace kvmm::virtio

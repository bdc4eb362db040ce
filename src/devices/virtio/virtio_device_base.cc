#include "devices/virtio/virtio_device_base.h"

namespace kvmm::virtio {

void VirtioDeviceBase::fail(Error const& error) {
    if (!m_context)
        return;
    // The context goes first: whatever on_failed() or the transport's callback does, the device
    // no longer serves those queues.
    auto failed = std::move(*m_context);
    m_context.reset();
    on_failed();
    failed.fail(error);
}

void VirtioDeviceBase::yield_turn(size_t queue_index) {
    m_budget_yields.fetch_add(1, std::memory_order_relaxed);
    m_context->reschedule(queue_index);
}

Expected<void> VirtioDeviceBase::interrupt_if_wanted(Queue& queue) {
    if (TRY(queue.should_interrupt()))
        m_context->interrupt->signal_used_buffer();
    return {};
}

void VirtioDeviceBase::guest_error(std::string const& message) { m_guest_log.warn("{}: {}", log_name(), message); }

} // namespace kvmm::virtio

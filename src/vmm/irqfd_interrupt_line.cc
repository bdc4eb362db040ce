#include "vmm/irqfd_interrupt_line.h"

#include <spdlog/spdlog.h>

namespace kvmm {

Expected<std::unique_ptr<IrqfdInterruptLine>> IrqfdInterruptLine::create(Vm& vm, uint32_t gsi) {
    auto event = TRY(EventFd::create());
    TRY(vm.register_irqfd(event.fd(), gsi));
    return std::unique_ptr<IrqfdInterruptLine>(new IrqfdInterruptLine(std::move(event), gsi));
}

void IrqfdInterruptLine::set_level(bool level) {
    if (!level)
        return;
    auto signalled = m_event.signal();
    if (!signalled && !m_reported_failure.exchange(true))
        spdlog::error("interrupt GSI {}: {}", m_gsi, signalled.error().message());
}

} // namespace kvmm

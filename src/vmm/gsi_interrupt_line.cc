#include "vmm/gsi_interrupt_line.h"

#include <spdlog/spdlog.h>

namespace kvmm {

void GsiInterruptLine::set_level(bool level) {
    auto result = m_vm.set_irq_line(m_gsi, level);
    if (!result && !m_reported_failure.exchange(true))
        spdlog::error("interrupt line {}: {}", m_gsi, result.error().message());
}

} // namespace kvmm

// IrqfdInterruptLine: an edge-triggered interrupt wire from a device on the
// event-loop thread to a GSI, through a KVM irqfd: raising it is one eventfd
// write, with no ioctl and no vCPU exit. Lowering it does nothing (an irqfd
// delivers an edge), which is what virtio-mmio's edge-triggered GSIs want.
//
// Threading: set_level() from any thread.
#pragma once

#include "base/event_fd.h"
#include "devices/bus/bus_device.h"
#include "hypervisor/vm.h"

#include <atomic>
#include <memory>

namespace kvmm {

class IrqfdInterruptLine final : public InterruptLine {
public:
    static Expected<std::unique_ptr<IrqfdInterruptLine>> create(Vm& vm, uint32_t gsi);
    void set_level(bool level) override;
    uint32_t gsi() const { return m_gsi; }

private:
    IrqfdInterruptLine(EventFd event, uint32_t gsi) : m_event(std::move(event)), m_gsi(gsi) {}

    EventFd m_event;
    uint32_t m_gsi;
    std::atomic<bool> m_reported_failure { false };
};

} // namespace kvmm

// GsiInterruptLine: a device's interrupt wire to a global system interrupt of
// the VM's in-kernel IOAPIC/PIC. A failing KVM_IRQ_LINE is logged once per
// line; the device keeps working without its interrupt (the guest may poll).
//
// Threading: set_level() from any thread (the VM ioctl is thread-safe).
#pragma once

#include "devices/bus/bus_device.h"
#include "hypervisor/vm.h"

#include <atomic>

namespace kvmm {

class GsiInterruptLine final : public InterruptLine {
public:
    GsiInterruptLine(Vm& vm, uint32_t gsi) : m_vm(vm), m_gsi(gsi) {}
    void set_level(bool level) override;

private:
    Vm& m_vm;
    uint32_t m_gsi;
    std::atomic<bool> m_reported_failure { false };
};

} // namespace kvmm

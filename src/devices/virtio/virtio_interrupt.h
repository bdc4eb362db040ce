// VirtioInterrupt: a virtio-mmio device's interrupt status register (4.2.2
// InterruptStatus / InterruptACK) and its wire to the guest.
//
// The wire is edge-triggered (the DSDT declares the GSI edge, and with KVM it is
// an irqfd), so every new reason pulses it; the status bits tell the driver's
// handler why. A reason that arrives while the driver is handling an earlier
// one pulses again, so no interrupt is lost between its read and its ack.
//
// Threading: signal_*() from the device's event-loop thread, status() and
// acknowledge() from vCPU threads; the register is an atomic.
#pragma once

#include "devices/bus/bus_device.h"
#include "devices/virtio/virtio_spec.h"

#include <atomic>
#include <cstdint>

namespace kvmm::virtio {

class VirtioInterrupt {
public:
    explicit VirtioInterrupt(InterruptLine& line) : m_line(line) {}

    void signal_used_buffer() { signal(INTERRUPT_USED_BUFFER); }
    void signal_config_change() { signal(INTERRUPT_CONFIG_CHANGE); }

    uint32_t status() const { return m_status.load(std::memory_order_acquire); }
    void acknowledge(uint32_t bits) { m_status.fetch_and(~bits, std::memory_order_acq_rel); }
    void reset() { m_status.store(0, std::memory_order_release); }
    // Restores a saved status without pulsing the wire: an edge sent before the save is the
    // interrupt controller's saved state, not the device's, and is restored there.
    void restore_status(uint32_t bits) { m_status.store(bits, std::memory_order_release); }

private:
    void signal(uint32_t bit) {
        m_status.fetch_or(bit, std::memory_order_acq_rel);
        m_line.pulse();
    }

    InterruptLine& m_line;
    std::atomic<uint32_t> m_status { 0 };
};

} // namespace kvmm::virtio

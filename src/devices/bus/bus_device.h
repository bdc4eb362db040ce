// BusDevice: something that answers reads and writes at offsets within the
// address range it was inserted at, on the port-I/O or the MMIO bus.
//
// Threading: read() and write() are called from vCPU threads, possibly several
// at once; each device protects its own state. A device never blocks on host
// I/O inside these calls.
#pragma once

#include <cstdint>
#include <span>

namespace kvmm {

class BusDevice {
public:
    virtual ~BusDevice() = default;
    // Fills `data` with the value at `offset` (data.size() is the access width).
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<uint8_t const> data) = 0;
};

// InterruptLine: a device's wire to the interrupt controller. raise()/lower()
// drive a level; pulse() is raise then lower, what an edge-triggered ISA line wants.
// Threading: callable from any thread.
class InterruptLine {
public:
    virtual ~InterruptLine() = default;
    virtual void set_level(bool level) = 0;
    void pulse() {
        set_level(true);
        set_level(false);
    }
};

} // namespace kvmm

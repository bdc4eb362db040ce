// Bus: maps non-overlapping address ranges [base, base+length) to devices.
// One Bus for port I/O, one for MMIO.
//
// Threading: insert() only while the VM is being built; afterwards the range
// table is immutable and dispatch() may run concurrently from every vCPU thread.
#pragma once

#include "base/expected.h"
#include "devices/bus/bus_device.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kvmm {

class Bus {
public:
    explicit Bus(std::string name) : m_name(std::move(name)) {}

    // Fails for a zero length, an overflowing range or one that overlaps an existing range.
    Expected<void> insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t length);

    // Returns false when no device covers [address, address+data.size()); reads of
    // unclaimed addresses then see all-ones, as on a real bus, and writes are dropped.
    bool read(uint64_t address, std::span<uint8_t> data) const;
    bool write(uint64_t address, std::span<uint8_t const> data) const;

    std::string const& name() const { return m_name; }

private:
    struct Range {
        uint64_t base;
        uint64_t length;
        std::shared_ptr<BusDevice> device;
    };
    Range const* find(uint64_t address, uint64_t length) const;

    std::string m_name;
    std::vector<Range> m_ranges; // sorted by base
};

} // namespace kvmm

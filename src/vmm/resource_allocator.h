// The guest-visible resources devices are attached with, handed out so that no two devices
// share one: interrupt lines (GSIs, i.e. IOAPIC pins) and MMIO windows. Reservations are for
// fixed addresses (the ISA devices' lines); allocations take the lowest free one, so the
// same configuration always gets the same layout (a saved machine needs that to restore).
//
// Threading: the builder thread (and later the event-loop thread for hotplug); not locked.
#pragma once

#include "base/expected.h"

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace kvmm {

class InterruptAllocator {
public:
    // Lines first..last (inclusive) exist.
    InterruptAllocator(uint32_t first, uint32_t last) : m_first(first), m_last(last) {}

    // Takes `gsi` for `owner`; fails, naming both owners, when it is taken or out of range.
    Expected<void> reserve(uint32_t gsi, std::string_view owner);
    // The lowest free line, taken for `owner`.
    Expected<uint32_t> allocate(std::string_view owner);
    // Who holds `gsi` (empty when it is free).
    std::string_view owner(uint32_t gsi) const;

private:
    uint32_t m_first;
    uint32_t m_last;
    std::map<uint32_t, std::string> m_taken;
};

class MmioAllocator {
public:
    // Windows are handed out inside [base, end).
    MmioAllocator(uint64_t base, uint64_t end) : m_base(base), m_end(end) {}

    // The lowest free window of `size` bytes aligned to `alignment` (a power of two), taken for `owner`.
    Expected<uint64_t> allocate(uint64_t size, uint64_t alignment, std::string_view owner);
    // Takes [address, address + size) for `owner`; fails on an overlap or outside the range.
    Expected<void> reserve(uint64_t address, uint64_t size, std::string_view owner);

private:
    struct Window {
        uint64_t end;
        std::string owner;
    };
    uint64_t m_base;
    uint64_t m_end;
    std::map<uint64_t, Window> m_taken; // by start address
};

} // namespace kvmm

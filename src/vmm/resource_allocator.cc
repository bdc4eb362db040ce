#include "vmm/resource_allocator.h"

#include <fmt/format.h>

#include <bit>

namespace kvmm {

Expected<void> InterruptAllocator::reserve(uint32_t gsi, std::string_view owner) {
    if (gsi < m_first || gsi > m_last)
        return Error::format("{}: interrupt line {} does not exist (lines {}-{})", owner, gsi, m_first, m_last);
    auto [entry, inserted] = m_taken.emplace(gsi, std::string(owner));
    if (!inserted)
        return Error::format("{}: interrupt line {} is already taken by {}", owner, gsi, entry->second);
    return {};
}

Expected<uint32_t> InterruptAllocator::allocate(std::string_view owner) {
    for (uint32_t gsi = m_first; gsi <= m_last; ++gsi) {
        if (!m_taken.contains(gsi)) {
            m_taken.emplace(gsi, std::string(owner));
            return gsi;
        }
    }
    return Error::format("{}: no free interrupt line: all {} lines ({}-{}) are taken", owner, m_last - m_first + 1,
                         m_first, m_last);
}

std::string_view InterruptAllocator::owner(uint32_t gsi) const {
    auto found = m_taken.find(gsi);
    return found == m_taken.end() ? std::string_view {} : std::string_view(found->second);
}

Expected<uint64_t> MmioAllocator::allocate(uint64_t size, uint64_t alignment, std::string_view owner) {
    if (size == 0 || !std::has_single_bit(alignment))
        return Error::format("{}: cannot allocate an MMIO window of {} bytes aligned to {}", owner, size, alignment);
    auto const align_up = [alignment](uint64_t address) { return (address + alignment - 1) & ~(alignment - 1); };
    uint64_t candidate = align_up(m_base);
    // Windows are kept sorted; the first gap that fits wins. Each step moves past a taken
    // window, so the loop ends after at most one pass over them.
    for (auto const& [start, window] : m_taken) {
        if (candidate > m_end)
            break; // past the end: no gap found
        if (start >= candidate && start - candidate >= size)
            break; // the gap before this window fits
        if (window.end > candidate)
            candidate = align_up(window.end);
    }
    if (candidate < m_base || candidate > m_end || m_end - candidate < size)
        return Error::format("{}: no free MMIO window of {:#x} bytes between {:#x} and {:#x}", owner, size, m_base,
                             m_end);
    m_taken.emplace(candidate, Window { candidate + size, std::string(owner) });
    return candidate;
}

Expected<void> MmioAllocator::reserve(uint64_t address, uint64_t size, std::string_view owner) {
    if (size == 0 || address < m_base || address > m_end || m_end - address < size)
        return Error::format("{}: MMIO window {:#x}+{:#x} is outside {:#x}-{:#x}", owner, address, size, m_base, m_end);
    uint64_t const end = address + size;
    // The window starting at or before `address`, and the one after it, are the only candidates.
    auto next = m_taken.lower_bound(address);
    if (next != m_taken.end() && next->first < end)
        return Error::format("{}: MMIO window {:#x}+{:#x} overlaps {}", owner, address, size, next->second.owner);
    if (next != m_taken.begin()) {
        auto const previous = std::prev(next);
        if (previous->second.end > address)
            return Error::format("{}: MMIO window {:#x}+{:#x} overlaps {}", owner, address, size,
                                 previous->second.owner);
    }
    m_taken.emplace(address, Window { end, std::string(owner) });
    return {};
}

} // namespace kvmm

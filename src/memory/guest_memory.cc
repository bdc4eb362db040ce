#include "memory/guest_memory.h"

#include <cstring>

namespace kvmm {

Expected<GuestMemory> GuestMemory::create(std::vector<GuestRegionSpec> const& specs,
                                          MemoryMapping::HugePages huge_pages) {
    if (specs.empty())
        return Error("guest memory needs at least one region");
    std::vector<Region> regions;
    regions.reserve(specs.size());
    for (auto const& spec : specs) {
        auto const end = checked_add(spec.start.value(), spec.size);
        if (spec.size == 0 || !end)
            return Error::format("guest memory region at {:#x} has invalid size {:#x}", spec.start.value(), spec.size);
        if (!regions.empty() && spec.start < regions.back().end())
            return Error::format("guest memory region at {:#x} overlaps or precedes the region ending at {:#x}",
                                 spec.start.value(), regions.back().end().value());
        auto mapping = TRY(MemoryMapping::create_anonymous(spec.size, huge_pages));
        regions.push_back(Region { spec.start, spec.size, std::move(mapping) });
    }
    return GuestMemory(std::move(regions));
}

template <typename Visitor>
Expected<void> GuestMemory::for_each_piece(GuestAddress address, uint64_t length, Visitor&& visit) const {
    if (!contains_range(address, length))
        return Error::format("guest memory access of {} bytes at {:#x} is outside guest RAM", length, address.value());
    uint64_t done = 0;
    while (done < length) {
        uint64_t const current = address.value() + done;
        for (auto const& region : m_regions) {
            if (current >= region.start.value() && current < region.end().value()) {
                uint64_t const offset = current - region.start.value();
                uint64_t const piece = std::min(length - done, region.size - offset);
                visit(region.mapping.data() + offset, done, piece);
                done += piece;
                break;
            }
        }
    }
    return {};
}

Expected<void> GuestMemory::host_ranges(GuestAddress address, uint64_t length, std::vector<iovec>& pieces) const {
    return for_each_piece(address, length, [&](std::byte* host, uint64_t, uint64_t piece) {
        pieces.push_back(iovec { host, static_cast<size_t>(piece) });
    });
}

bool GuestMemory::contains_range(GuestAddress address, uint64_t length) const {
    auto const end = checked_add(address.value(), length);
    if (!end)
        return false;
    // Walk forward through contiguous regions until the range is covered.
    uint64_t cursor = address.value();
    if (length == 0) {
        for (auto const& region : m_regions) {
            if (cursor >= region.start.value() && cursor <= region.end().value())
                return true;
        }
        return false;
    }
    for (auto const& region : m_regions) {
        if (cursor >= region.start.value() && cursor < region.end().value()) {
            if (*end <= region.end().value())
                return true;
            cursor = region.end().value(); // continues only if the next region starts exactly here
        }
    }
    return false;
}

Expected<void> GuestMemory::read(GuestAddress address, std::span<std::byte> destination) const {
    return for_each_piece(address, destination.size(), [&](std::byte* host, uint64_t done, uint64_t piece) {
        std::memcpy(destination.data() + done, host, piece);
    });
}

Expected<void> GuestMemory::write(GuestAddress address, std::span<std::byte const> source) const {
    return for_each_piece(address, source.size(), [&](std::byte* host, uint64_t done, uint64_t piece) {
        std::memcpy(host, source.data() + done, piece);
    });
}

Expected<void> GuestMemory::fill_zero(GuestAddress address, uint64_t length) const {
    return for_each_piece(address, length,
                          [&](std::byte* host, uint64_t, uint64_t piece) { std::memset(host, 0, piece); });
}

uint64_t GuestMemory::total_size() const {
    uint64_t total = 0;
    for (auto const& region : m_regions)
        total += region.size;
    return total;
}

} // namespace kvmm

#include "memory/guest_memory.h"

#include <algorithm>
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

namespace {

constexpr uint64_t PAGE_SIZE = 4096;

size_t bitmap_words(uint64_t region_size) { return static_cast<size_t>((region_size / PAGE_SIZE + 63) / 64); }

// Sets the bits of the pages [offset, offset + length) touches.
void mark_pages(std::atomic<uint64_t>* bitmap, uint64_t offset, uint64_t length) {
    if (length == 0)
        return;
    uint64_t const first = offset / PAGE_SIZE;
    uint64_t const last = (offset + length - 1) / PAGE_SIZE;
    for (uint64_t page = first; page <= last; ++page)
        bitmap[page / 64].fetch_or(uint64_t { 1 } << (page % 64), std::memory_order_relaxed);
}

} // namespace

void GuestMemory::enable_dirty_tracking() {
    for (auto& region : m_regions) {
        if (!region.dirty_pages)
            region.dirty_pages = std::make_unique<std::atomic<uint64_t>[]>(bitmap_words(region.size));
    }
}

std::vector<uint64_t> GuestMemory::take_dirty_pages(size_t region_index) const {
    if (region_index >= m_regions.size() || !m_regions[region_index].dirty_pages)
        return {};
    auto const& region = m_regions[region_index];
    std::vector<uint64_t> taken(bitmap_words(region.size));
    for (size_t word = 0; word < taken.size(); ++word)
        taken[word] = region.dirty_pages[word].exchange(0, std::memory_order_relaxed);
    return taken;
}

void GuestMemory::mark_dirty_pages(size_t region_index, std::span<uint64_t const> bitmap) const {
    if (region_index >= m_regions.size() || !m_regions[region_index].dirty_pages)
        return;
    auto const& region = m_regions[region_index];
    size_t const words = std::min(bitmap.size(), bitmap_words(region.size));
    for (size_t word = 0; word < words; ++word) {
        if (bitmap[word] != 0)
            region.dirty_pages[word].fetch_or(bitmap[word], std::memory_order_relaxed);
    }
}

template <typename Visitor>
Expected<void> GuestMemory::for_each_piece(GuestAddress address, uint64_t length, Access access,
                                           Visitor&& visit) const {
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
                if (access == Access::Write && region.dirty_pages)
                    mark_pages(region.dirty_pages.get(), offset, piece);
                done += piece;
                break;
            }
        }
    }
    return {};
}

Expected<void> GuestMemory::host_ranges(GuestAddress address, uint64_t length, std::vector<iovec>& pieces) const {
    return for_each_piece(address, length, Access::Write, [&](std::byte* host, uint64_t, uint64_t piece) {
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
    return for_each_piece(address, destination.size(), Access::Read,
                          [&](std::byte* host, uint64_t done, uint64_t piece) {
                              std::memcpy(destination.data() + done, host, piece);
                          });
}

Expected<void> GuestMemory::write(GuestAddress address, std::span<std::byte const> source) const {
    return for_each_piece(address, source.size(), Access::Write, [&](std::byte* host, uint64_t done, uint64_t piece) {
        std::memcpy(host, source.data() + done, piece);
    });
}

Expected<void> GuestMemory::fill_zero(GuestAddress address, uint64_t length) const {
    return for_each_piece(address, length, Access::Write,
                          [&](std::byte* host, uint64_t, uint64_t piece) { std::memset(host, 0, piece); });
}

uint64_t GuestMemory::total_size() const {
    uint64_t total = 0;
    for (auto const& region : m_regions)
        total += region.size;
    return total;
}

} // namespace kvmm

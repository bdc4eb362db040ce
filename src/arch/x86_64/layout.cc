#include "arch/x86_64/layout.h"

namespace kvmm::x86_64 {

Expected<std::vector<GuestRegionSpec>> ram_regions(uint64_t memory_size) {
    if (memory_size < MIN_MEMORY_SIZE || memory_size > MAX_MEMORY_SIZE)
        return Error::format("memory size {} MiB is outside the supported range {} MiB to {} MiB", memory_size / MiB,
                             MIN_MEMORY_SIZE / MiB, MAX_MEMORY_SIZE / MiB);
    if (memory_size % 4096 != 0)
        return Error::format("memory size {} bytes is not a multiple of 4 KiB", memory_size);
    std::vector<GuestRegionSpec> regions;
    uint64_t const low = std::min(memory_size, MMIO_GAP_START);
    regions.push_back(GuestRegionSpec { GuestAddress(0), low });
    if (memory_size > low)
        regions.push_back(GuestRegionSpec { GuestAddress(MMIO_GAP_END), memory_size - low });
    return regions;
}

uint64_t low_memory_end(GuestMemory const& memory) {
    auto const& first = memory.regions().front();
    return std::min(first.end().value(), MMIO_GAP_START);
}

std::vector<E820Entry> memory_map(GuestMemory const& memory) {
    std::vector<E820Entry> entries;
    entries.push_back(E820Entry { 0, EBDA_START, E820Type::Ram });
    entries.push_back(E820Entry { EBDA_START, ACPI_TABLES_START - EBDA_START, E820Type::Reserved });
    // The ACPI tables are reclaimable once parsed (type 3), as firmware reports them.
    entries.push_back(E820Entry { ACPI_TABLES_START, ACPI_TABLES_END - ACPI_TABLES_START, E820Type::Acpi });
    uint64_t const low_end = low_memory_end(memory);
    entries.push_back(E820Entry { HIGH_MEMORY_START, low_end - HIGH_MEMORY_START, E820Type::Ram });
    for (auto const& region : memory.regions()) {
        if (region.start.value() >= MMIO_GAP_END)
            entries.push_back(E820Entry { region.start.value(), region.size, E820Type::Ram });
    }
    return entries;
}

std::vector<E820Entry> firmware_memory_map(GuestMemory const& memory) {
    std::vector<E820Entry> entries;
    for (auto const& region : memory.regions())
        entries.push_back(E820Entry { region.start.value(), region.size, E820Type::Ram });
    entries.push_back(E820Entry { KVM_IDENTITY_MAP_ADDRESS, KVM_PRIVATE_PAGES_SIZE, E820Type::Reserved });
    return entries;
}

} // namespace kvmm::x86_64

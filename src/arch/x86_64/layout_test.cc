#include "arch/x86_64/layout.h"

#include <gtest/gtest.h>

namespace kvmm::x86_64 {
namespace {

TEST(RamRegions, SmallMemoryIsOneLowRegion) {
    auto regions = MUST(ram_regions(128 * MiB));
    ASSERT_EQ(regions.size(), 1u);
    EXPECT_EQ(regions[0].start.value(), 0u);
    EXPECT_EQ(regions[0].size, 128 * MiB);
}

TEST(RamRegions, ExactlyThreeGibFillsLowRegionOnly) {
    auto regions = MUST(ram_regions(3 * GiB));
    ASSERT_EQ(regions.size(), 1u);
    EXPECT_EQ(regions[0].size, MMIO_GAP_START);
}

TEST(RamRegions, MemoryAcrossTheGapContinuesAtFourGib) {
    auto regions = MUST(ram_regions(5 * GiB));
    ASSERT_EQ(regions.size(), 2u);
    EXPECT_EQ(regions[1].start.value(), MMIO_GAP_END);
    EXPECT_EQ(regions[0].size + regions[1].size, 5 * GiB);
}

TEST(RamRegions, BadSizesAreRejectedWithTheSize) {
    EXPECT_FALSE(ram_regions(0).has_value());
    EXPECT_FALSE(ram_regions(MIN_MEMORY_SIZE - 4096).has_value());
    EXPECT_FALSE(ram_regions(MAX_MEMORY_SIZE + 4096).has_value());
    auto unaligned = ram_regions(64 * MiB + 1);
    ASSERT_FALSE(unaligned.has_value());
    EXPECT_NE(unaligned.error().message().find("67108865"), std::string::npos);
}

TEST(MemoryMap, CoversLowRamReservedAreaAndHighRam) {
    auto const regions = MUST(ram_regions(4 * GiB));
    auto memory = MUST(GuestMemory::create(regions));
    auto map = memory_map(memory);
    ASSERT_EQ(map.size(), 5u);
    EXPECT_EQ(map[0].type, E820Type::Ram);
    EXPECT_EQ(map[2].type, E820Type::Acpi);
    EXPECT_EQ(map[3].address, HIGH_MEMORY_START);
    EXPECT_EQ(map[3].address + map[3].size, MMIO_GAP_START);
    EXPECT_EQ(map[4].address, MMIO_GAP_END);
    EXPECT_EQ(map[4].size, 1 * GiB);
}

} // namespace
} // namespace kvmm::x86_64

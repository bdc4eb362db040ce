#include "memory/guest_memory.h"

#include <gtest/gtest.h>

#include <array>

namespace kvmm {
namespace {

constexpr uint64_t PAGE = 4096;

GuestMemory two_contiguous_regions() {
    return MUST(GuestMemory::create({ { GuestAddress(0), 2 * PAGE }, { GuestAddress(2 * PAGE), PAGE } }));
}

TEST(GuestMemory, ReadBackWhatWasWritten) {
    auto memory = two_contiguous_regions();
    ASSERT_TRUE(memory.write_obj<uint64_t>(GuestAddress(0x10), 0x1122334455667788ull).has_value());
    EXPECT_EQ(memory.read_obj<uint64_t>(GuestAddress(0x10)).value(), 0x1122334455667788ull);
}

TEST(GuestMemory, AccessCrossingContiguousRegionsSucceeds) {
    auto memory = two_contiguous_regions();
    std::array<std::byte, 16> data {};
    data.fill(std::byte { 0xab });
    ASSERT_TRUE(memory.write(GuestAddress(2 * PAGE - 8), data).has_value());
    EXPECT_EQ(memory.read_obj<uint8_t>(GuestAddress(2 * PAGE + 7)).value(), 0xab);
}

TEST(GuestMemory, AccessPastEndFailsWithAddressInMessage) {
    auto memory = two_contiguous_regions();
    auto result = memory.read_obj<uint32_t>(GuestAddress(3 * PAGE - 2));
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("0x2ffe"), std::string::npos);
}

TEST(GuestMemory, AccessIntoGapBetweenRegionsFails) {
    auto memory = MUST(GuestMemory::create({ { GuestAddress(0), PAGE }, { GuestAddress(4 * PAGE), PAGE } }));
    EXPECT_FALSE(memory.read_obj<uint32_t>(GuestAddress(PAGE - 2)).has_value());
    EXPECT_FALSE(memory.read_obj<uint32_t>(GuestAddress(2 * PAGE)).has_value());
    EXPECT_TRUE(memory.read_obj<uint32_t>(GuestAddress(4 * PAGE)).has_value());
}

TEST(GuestMemory, WrappingRangeIsRejected) {
    auto memory = two_contiguous_regions();
    EXPECT_FALSE(memory.contains_range(GuestAddress(~0ull - 4), 16));
    EXPECT_FALSE(memory.fill_zero(GuestAddress(0x100), ~0ull).has_value());
}

TEST(GuestMemory, OverlappingOrEmptyRegionsAreRejected) {
    EXPECT_FALSE(GuestMemory::create({ { GuestAddress(0), 2 * PAGE }, { GuestAddress(PAGE), PAGE } }).has_value());
    EXPECT_FALSE(GuestMemory::create({ { GuestAddress(0), 0 } }).has_value());
    EXPECT_FALSE(GuestMemory::create({}).has_value());
}

TEST(GuestMemory, ReportsTotalSize) { EXPECT_EQ(two_contiguous_regions().total_size(), 3 * PAGE); }

} // namespace
} // namespace kvmm

#include "vmm/resource_allocator.h"

#include <gtest/gtest.h>

#include <string>

namespace kvmm {
namespace {

TEST(InterruptAllocator, AllocatesTheLowestFreeLineAroundReservations) {
    InterruptAllocator lines(0, 7);
    ASSERT_TRUE(lines.reserve(0, "timer"));
    ASSERT_TRUE(lines.reserve(2, "cascade"));
    EXPECT_EQ(MUST(lines.allocate("a")), 1u);
    EXPECT_EQ(MUST(lines.allocate("b")), 3u);
    EXPECT_EQ(lines.owner(3), "b");
    EXPECT_EQ(lines.owner(4), "");
}

TEST(InterruptAllocator, ATakenOrMissingLineIsRefusedNamingBothOwners) {
    InterruptAllocator lines(0, 23);
    ASSERT_TRUE(lines.reserve(4, "COM1"));
    auto again = lines.reserve(4, "virtio block '1'");
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().message(), "virtio block '1': interrupt line 4 is already taken by COM1");
    auto missing = lines.reserve(24, "x");
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find("interrupt line 24 does not exist (lines 0-23)"), std::string::npos);
}

TEST(InterruptAllocator, RunningOutSaysHowManyLinesThereAre) {
    InterruptAllocator lines(5, 6);
    ASSERT_TRUE(lines.allocate("a"));
    ASSERT_TRUE(lines.allocate("b"));
    auto none = lines.allocate("c");
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().message(), "c: no free interrupt line: all 2 lines (5-6) are taken");
}

TEST(MmioAllocator, WindowsAreAlignedAndHandedOutInOrder) {
    MmioAllocator windows(0x1000'0000, 0x1001'0000);
    EXPECT_EQ(MUST(windows.allocate(0x1000, 0x1000, "a")), 0x1000'0000u);
    EXPECT_EQ(MUST(windows.allocate(0x10, 0x1000, "b")), 0x1000'1000u);
    EXPECT_EQ(MUST(windows.allocate(0x1000, 0x1000, "c")), 0x1000'2000u) << "b's window is aligned up past its end";
}

TEST(MmioAllocator, AllocationFillsTheGapsReservationsLeave) {
    MmioAllocator windows(0x0, 0x10000);
    ASSERT_TRUE(windows.reserve(0x1000, 0x1000, "fixed"));
    EXPECT_EQ(MUST(windows.allocate(0x1000, 0x1000, "a")), 0x0u);
    EXPECT_EQ(MUST(windows.allocate(0x1000, 0x1000, "b")), 0x2000u);
    EXPECT_EQ(MUST(windows.allocate(0x2000, 0x2000, "c")), 0x4000u) << "0x3000 is free but not 8 KiB-aligned";
    EXPECT_EQ(MUST(windows.allocate(0x1000, 0x1000, "d")), 0x3000u) << "the gap left behind is used";
}

TEST(MmioAllocator, OverlapsAndWindowsOutsideTheRangeAreRefused) {
    MmioAllocator windows(0x1000, 0x9000);
    ASSERT_TRUE(windows.reserve(0x2000, 0x1000, "pvpanic"));
    auto overlap = windows.reserve(0x2800, 0x1000, "x");
    ASSERT_FALSE(overlap);
    EXPECT_EQ(overlap.error().message(), "x: MMIO window 0x2800+0x1000 overlaps pvpanic");
    auto before = windows.reserve(0x1800, 0x1000, "y");
    ASSERT_FALSE(before);
    EXPECT_NE(before.error().message().find("overlaps pvpanic"), std::string::npos);
    EXPECT_FALSE(windows.reserve(0x8800, 0x1000, "z")) << "runs past the end";
    EXPECT_FALSE(windows.reserve(0x800, 0x100, "z")) << "below the start";
    EXPECT_FALSE(windows.reserve(0x8000, ~0ull, "z")) << "a size that wraps";
    EXPECT_TRUE(windows.reserve(0x3000, 0x1000, "adjacent"));
}

TEST(MmioAllocator, RunningOutNamesTheSizeAndTheRange) {
    MmioAllocator windows(0x0, 0x2000);
    ASSERT_TRUE(windows.allocate(0x1000, 0x1000, "a"));
    ASSERT_TRUE(windows.allocate(0x1000, 0x1000, "b"));
    auto none = windows.allocate(0x1000, 0x1000, "c");
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().message(), "c: no free MMIO window of 0x1000 bytes between 0x0 and 0x2000");
    EXPECT_FALSE(windows.allocate(~0ull, 0x1000, "huge"));
    EXPECT_FALSE(windows.allocate(0x1000, 3, "unaligned")) << "alignment must be a power of two";
}

} // namespace
} // namespace kvmm

#include "devices/virtio/balloon/page_release.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sys/mman.h>

namespace kvmm::virtio {
namespace {

std::vector<std::byte> encode(std::vector<uint32_t> const& pfns) {
    std::vector<std::byte> bytes;
    for (uint32_t const pfn : pfns)
        for (unsigned i = 0; i < 4; ++i)
            bytes.push_back(static_cast<std::byte>(pfn >> (8 * i)));
    return bytes;
}

bool resident(GuestMemory const& memory, GuestAddress address) {
    std::vector<iovec> pieces;
    MUST(memory.host_ranges(address, BALLOON_PAGE_SIZE, pieces));
    unsigned char state = 0;
    EXPECT_EQ(::mincore(pieces[0].iov_base, BALLOON_PAGE_SIZE, &state), 0);
    return state & 1;
}

TEST(DecodePfns, ReadsLittleEndianEntriesAndReportsTrailingBytes) {
    auto bytes = encode({ 0x12345678, 1 });
    bytes.push_back(std::byte { 0xee });
    std::vector<uint32_t> pfns { 99 };
    EXPECT_EQ(decode_pfns(bytes, pfns), 1u);
    EXPECT_EQ(pfns, (std::vector<uint32_t> { 0x12345678, 1 }));
}

TEST(CoalescePfns, UnsortedDuplicatedPfnsBecomeMaximalRuns) {
    std::vector<uint32_t> pfns { 7, 3, 5, 4, 3, 9, 8, 0xffffffff };
    std::vector<PageRun> runs;
    coalesce_pfns(pfns, runs);
    EXPECT_EQ(runs, (std::vector<PageRun> { { 3, 3 }, { 7, 3 }, { 0xffffffff, 1 } }));
}

TEST(CoalescePfns, EmptyInputGivesNoRuns) {
    std::vector<uint32_t> pfns;
    std::vector<PageRun> runs { { 1, 1 } };
    coalesce_pfns(pfns, runs);
    EXPECT_TRUE(runs.empty());
}

TEST(ReleaseGuestRange, ReleasedPagesLeaveTheHostAndReadBackZero) {
    auto memory = MUST(GuestMemory::create({ { GuestAddress(0), 1 << 20 } }));
    std::vector<std::byte> const pattern(3 * BALLOON_PAGE_SIZE, std::byte { 0x5a });
    MUST(memory.write(GuestAddress(0x10000), pattern));
    ASSERT_TRUE(resident(memory, GuestAddress(0x11000)));
    std::vector<iovec> scratch;
    MUST(release_guest_range(memory, GuestAddress(0x10000), 2 * BALLOON_PAGE_SIZE, scratch));
    EXPECT_FALSE(resident(memory, GuestAddress(0x10000)));
    EXPECT_FALSE(resident(memory, GuestAddress(0x11000)));
    EXPECT_TRUE(resident(memory, GuestAddress(0x12000)));
    std::vector<std::byte> back(3 * BALLOON_PAGE_SIZE);
    MUST(memory.read(GuestAddress(0x10000), back));
    EXPECT_TRUE(std::all_of(back.begin(), back.begin() + 2 * BALLOON_PAGE_SIZE,
                            [](std::byte b) { return b == std::byte { 0 }; }));
    EXPECT_TRUE(std::all_of(back.begin() + 2 * BALLOON_PAGE_SIZE, back.end(),
                            [](std::byte b) { return b == std::byte { 0x5a }; }));
}

TEST(ReleaseGuestRange, RangeAcrossContiguousRegionsReleasesBoth) {
    auto memory = MUST(GuestMemory::create({ { GuestAddress(0), 0x10000 }, { GuestAddress(0x10000), 0x10000 } }));
    std::vector<std::byte> const pattern(2 * BALLOON_PAGE_SIZE, std::byte { 0x77 });
    MUST(memory.write(GuestAddress(0xf000), pattern));
    std::vector<iovec> scratch;
    MUST(release_guest_range(memory, GuestAddress(0xf000), 2 * BALLOON_PAGE_SIZE, scratch));
    EXPECT_EQ(scratch.size(), 2u);
    EXPECT_FALSE(resident(memory, GuestAddress(0xf000)));
    EXPECT_FALSE(resident(memory, GuestAddress(0x10000)));
}

TEST(ReleaseGuestRange, MisalignedOrOutsideRangesAreRefusedWithoutReleasing) {
    auto memory = MUST(GuestMemory::create({ { GuestAddress(0), 0x10000 } }));
    std::vector<std::byte> const pattern(BALLOON_PAGE_SIZE, std::byte { 1 });
    MUST(memory.write(GuestAddress(0xf000), pattern));
    std::vector<iovec> scratch;
    EXPECT_FALSE(release_guest_range(memory, GuestAddress(0xf800), BALLOON_PAGE_SIZE, scratch));
    EXPECT_FALSE(release_guest_range(memory, GuestAddress(0xf000), 0x800, scratch));
    EXPECT_FALSE(release_guest_range(memory, GuestAddress(0xf000), 0, scratch));
    EXPECT_FALSE(release_guest_range(memory, GuestAddress(0xf000), 2 * BALLOON_PAGE_SIZE, scratch));
    EXPECT_TRUE(resident(memory, GuestAddress(0xf000)));
}

} // namespace
} // namespace kvmm::virtio

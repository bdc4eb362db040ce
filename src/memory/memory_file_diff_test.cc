// Dirty tracking in GuestMemory, diff memory files and applying them onto a base: a chain of a
// full file and two diffs, applied in order, gives the memory as it was at the last diff.
#include "base/testing/temporary_directory.h"
#include "memory/guest_memory.h"
#include "memory/memory_file_diff.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace kvmm {
namespace {

constexpr uint64_t PAGE = 4096;

std::vector<GuestRegionSpec> two_regions() {
    return { { GuestAddress(0), 130 * PAGE }, { GuestAddress(0x1000000), 3 * PAGE } };
}

bool page_set(std::vector<uint64_t> const& bitmap, uint64_t page) { return (bitmap[page / 64] >> (page % 64)) & 1; }

uint64_t count_set(std::vector<uint64_t> const& bitmap) {
    uint64_t count = 0;
    for (auto word : bitmap)
        count += static_cast<uint64_t>(__builtin_popcountll(word));
    return count;
}

TEST(GuestMemoryDirtyTracking, WritesMarkTheirPagesReadsDoNotAndTakingClears) {
    auto memory = MUST(GuestMemory::create(two_regions()));
    MUST(memory.write_obj<uint64_t>(GuestAddress(5), 1)); // before tracking: not recorded
    EXPECT_FALSE(memory.dirty_tracking());
    EXPECT_TRUE(memory.take_dirty_pages(0).empty());
    memory.enable_dirty_tracking();
    EXPECT_TRUE(memory.dirty_tracking());
    // A write across a page boundary marks both pages; one into the second region its page.
    MUST(memory.write_obj<uint64_t>(GuestAddress(70 * PAGE - 4), 2));
    MUST(memory.fill_zero(GuestAddress(129 * PAGE), PAGE));
    MUST(memory.write_obj<uint8_t>(GuestAddress(0x1000000 + 2 * PAGE), 3));
    (void)MUST(memory.read_obj<uint64_t>(GuestAddress(10 * PAGE)));
    std::vector<iovec> pieces;
    MUST(memory.host_ranges(GuestAddress(100 * PAGE), 2 * PAGE, pieces));

    auto const first = memory.take_dirty_pages(0);
    ASSERT_EQ(first.size(), 3u); // 130 pages in 64-bit words
    EXPECT_TRUE(page_set(first, 69));
    EXPECT_TRUE(page_set(first, 70));
    EXPECT_TRUE(page_set(first, 129));
    EXPECT_TRUE(page_set(first, 100));
    EXPECT_TRUE(page_set(first, 101));
    EXPECT_FALSE(page_set(first, 10));
    EXPECT_FALSE(page_set(first, 0));
    EXPECT_EQ(count_set(first), 5u);
    auto const second = memory.take_dirty_pages(1);
    EXPECT_EQ(count_set(second), 1u);
    EXPECT_TRUE(page_set(second, 2));

    EXPECT_EQ(count_set(memory.take_dirty_pages(0)), 0u);
    // A snapshot that failed gives the pages back.
    memory.mark_dirty_pages(0, first);
    EXPECT_EQ(memory.take_dirty_pages(0), first);
}

struct File {
    explicit File(std::string path_)
        : path(std::move(path_)), fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) {}
    ~File() { ::close(fd); }
    std::string path;
    int fd;
};

std::vector<uint64_t> all_pages(GuestMemory const& memory, size_t region) { return memory.take_dirty_pages(region); }

TEST(DiffMemoryFile, AChainOfAFullAndTwoDiffsAppliedInOrderGivesTheLastMemory) {
    testing::TemporaryDirectory directory;
    auto memory = MUST(GuestMemory::create(two_regions()));
    memory.enable_dirty_tracking();
    MUST(memory.write_obj<uint64_t>(GuestAddress(3 * PAGE), 0x1111));
    MUST(memory.write_obj<uint64_t>(GuestAddress(4 * PAGE), 0x4444));
    MUST(memory.write_obj<uint64_t>(GuestAddress(0x1000000), 0x2222));
    File full(directory / "full.mem");
    MUST(memory.write_to_file(full.fd));
    (void)all_pages(memory, 0);
    (void)all_pages(memory, 1);

    // Diff 1: one page changed, one zeroed (must overwrite the base's data), one new.
    MUST(memory.write_obj<uint64_t>(GuestAddress(3 * PAGE), 0x3333));
    MUST(memory.fill_zero(GuestAddress(4 * PAGE), PAGE));
    MUST(memory.write_obj<uint64_t>(GuestAddress(120 * PAGE + 8), 0x5555));
    File diff1(directory / "diff1.mem");
    std::vector<std::vector<uint64_t>> dirty { memory.take_dirty_pages(0), memory.take_dirty_pages(1) };
    auto const stats1 = MUST(memory.write_pages_to_file(diff1.fd, dirty));
    EXPECT_EQ(stats1.bytes_written, 3 * PAGE);
    EXPECT_EQ(std::filesystem::file_size(diff1.path), memory.total_size());

    // Diff 2: only the second region.
    MUST(memory.write_obj<uint64_t>(GuestAddress(0x1000000 + PAGE), 0x6666));
    File diff2(directory / "diff2.mem");
    dirty = { memory.take_dirty_pages(0), memory.take_dirty_pages(1) };
    EXPECT_EQ(MUST(memory.write_pages_to_file(diff2.fd, dirty)).bytes_written, PAGE);

    auto const applied1 = MUST(apply_diff_memory_file(full.fd, diff1.fd, "full", "diff1"));
    EXPECT_EQ(applied1.bytes_copied, 3 * PAGE);
    auto const applied2 = MUST(apply_diff_memory_file(full.fd, diff2.fd, "full", "diff2"));
    EXPECT_EQ(applied2.bytes_copied, PAGE);

    auto merged = MUST(GuestMemory::create_from_file(two_regions(), full.fd, "merged"));
    EXPECT_EQ(MUST(merged.read_obj<uint64_t>(GuestAddress(3 * PAGE))), 0x3333u);
    EXPECT_EQ(MUST(merged.read_obj<uint64_t>(GuestAddress(4 * PAGE))), 0u);
    EXPECT_EQ(MUST(merged.read_obj<uint64_t>(GuestAddress(120 * PAGE + 8))), 0x5555u);
    EXPECT_EQ(MUST(merged.read_obj<uint64_t>(GuestAddress(0x1000000))), 0x2222u);
    EXPECT_EQ(MUST(merged.read_obj<uint64_t>(GuestAddress(0x1000000 + PAGE))), 0x6666u);
}

TEST(DiffMemoryFile, ADiffOfAnotherSizeIsRefusedAndTheBaseIsUnchanged) {
    testing::TemporaryDirectory directory;
    File base(directory / "base.mem");
    File diff(directory / "diff.mem");
    ASSERT_EQ(::pwrite(base.fd, "base", 4, 0), 4);
    ASSERT_EQ(::ftruncate(base.fd, 8 * PAGE), 0);
    ASSERT_EQ(::pwrite(diff.fd, "diff", 4, 0), 4);
    ASSERT_EQ(::ftruncate(diff.fd, 16 * PAGE), 0);
    auto const refused = apply_diff_memory_file(base.fd, diff.fd, "'base.mem'", "'diff.mem'");
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().message().find("same machine"), std::string::npos) << refused.error().message();
    char first[4] {};
    ASSERT_EQ(::pread(base.fd, first, 4, 0), 4);
    EXPECT_EQ(std::string(first, 4), "base");
}

TEST(DiffMemoryFile, BitmapsThatDoNotMatchTheRegionsAreRefused) {
    testing::TemporaryDirectory directory;
    auto memory = MUST(GuestMemory::create(two_regions()));
    File file(directory / "diff.mem");
    std::vector<std::vector<uint64_t>> one { std::vector<uint64_t>(3) };
    EXPECT_FALSE(memory.write_pages_to_file(file.fd, one).has_value());
    std::vector<std::vector<uint64_t>> short_bitmap { std::vector<uint64_t>(1), std::vector<uint64_t>(1) };
    EXPECT_FALSE(memory.write_pages_to_file(file.fd, short_bitmap).has_value());
}

} // namespace
} // namespace kvmm

#include "memory/guest_memory.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace kvmm {
namespace {

constexpr uint64_t PAGE = 4096;

// An unlinked temporary file, removed when the test ends.
class TemporaryFile {
public:
    TemporaryFile() {
        char name[] = "/tmp/kvmm-memory-file-XXXXXX";
        m_fd = ::mkstemp(name);
        if (m_fd >= 0)
            ::unlink(name);
    }
    ~TemporaryFile() {
        if (m_fd >= 0)
            ::close(m_fd);
    }
    int fd() const { return m_fd; }
    uint64_t size() const {
        struct stat status {};
        ::fstat(m_fd, &status);
        return static_cast<uint64_t>(status.st_size);
    }
    // Bytes actually stored (holes excluded).
    uint64_t allocated() const {
        struct stat status {};
        ::fstat(m_fd, &status);
        return static_cast<uint64_t>(status.st_blocks) * 512;
    }

private:
    int m_fd { -1 };
};

std::vector<GuestRegionSpec> two_regions() {
    // Not contiguous in guest-physical space, as the MMIO gap makes them in a large guest.
    return { { GuestAddress(0), 4 * PAGE }, { GuestAddress(0x100000), 2 * PAGE } };
}

TEST(GuestMemoryFile, RoundTripKeepsEveryRegionsBytes) {
    auto memory = MUST(GuestMemory::create(two_regions()));
    ASSERT_TRUE(memory.write_obj<uint64_t>(GuestAddress(0x10), 0x1111).has_value());
    ASSERT_TRUE(memory.write_obj<uint64_t>(GuestAddress(3 * PAGE + 8), 0x2222).has_value());
    ASSERT_TRUE(memory.write_obj<uint64_t>(GuestAddress(0x100000 + PAGE + 16), 0x3333).has_value());
    TemporaryFile file;
    ASSERT_GE(file.fd(), 0);
    auto const stats = memory.write_to_file(file.fd());
    ASSERT_TRUE(stats.has_value()) << stats.error().message();
    EXPECT_EQ(file.size(), 6 * PAGE);

    auto restored = GuestMemory::create_from_file(two_regions(), file.fd(), "test");
    ASSERT_TRUE(restored.has_value()) << restored.error().message();
    EXPECT_EQ(restored->read_obj<uint64_t>(GuestAddress(0x10)).value(), 0x1111u);
    EXPECT_EQ(restored->read_obj<uint64_t>(GuestAddress(3 * PAGE + 8)).value(), 0x2222u);
    EXPECT_EQ(restored->read_obj<uint64_t>(GuestAddress(0x100000 + PAGE + 16)).value(), 0x3333u);
    EXPECT_EQ(restored->read_obj<uint64_t>(GuestAddress(PAGE)).value(), 0u);
}

TEST(GuestMemoryFile, ZeroPagesAreLeftAsHoles) {
    auto memory = MUST(GuestMemory::create(two_regions()));
    ASSERT_TRUE(memory.write_obj<uint8_t>(GuestAddress(2 * PAGE + 100), 7).has_value());
    TemporaryFile file;
    auto const stats = MUST(memory.write_to_file(file.fd()));
    EXPECT_EQ(stats.bytes_written, PAGE);
    EXPECT_EQ(stats.zero_pages_skipped, 5u);
    EXPECT_EQ(file.size(), 6 * PAGE);
    // One page of data; file systems without holes would store more, tmp file systems do not.
    EXPECT_LE(file.allocated(), 2 * PAGE);
}

TEST(GuestMemoryFile, ALargeUntouchedRegionIsSkippedWithoutBeingRead) {
    auto memory = MUST(GuestMemory::create({ { GuestAddress(0), 256 << 20 } }));
    ASSERT_TRUE(memory.write_obj<uint64_t>(GuestAddress(100 << 20), 5).has_value());
    TemporaryFile file;
    auto const stats = MUST(memory.write_to_file(file.fd()));
    EXPECT_EQ(stats.bytes_written, PAGE);
    EXPECT_EQ(file.size(), 256u << 20);
    auto restored = MUST(GuestMemory::create_from_file({ { GuestAddress(0), 256 << 20 } }, file.fd(), "test"));
    EXPECT_EQ(restored.read_obj<uint64_t>(GuestAddress(100 << 20)).value(), 5u);
    // Snapshotting the restored memory again reads its file-backed pages: the data survives.
    TemporaryFile again;
    EXPECT_EQ(MUST(restored.write_to_file(again.fd())).bytes_written, PAGE);
}

TEST(GuestMemoryFile, GuestWritesNeverReachTheFile) {
    auto memory = MUST(GuestMemory::create(two_regions()));
    ASSERT_TRUE(memory.write_obj<uint64_t>(GuestAddress(0), 42).has_value());
    TemporaryFile file;
    MUST(memory.write_to_file(file.fd()));
    auto restored = MUST(GuestMemory::create_from_file(two_regions(), file.fd(), "test"));
    ASSERT_TRUE(restored.write_obj<uint64_t>(GuestAddress(0), 99).has_value());
    uint64_t on_disk = 0;
    ASSERT_EQ(::pread(file.fd(), &on_disk, sizeof(on_disk), 0), static_cast<ssize_t>(sizeof(on_disk)));
    EXPECT_EQ(on_disk, 42u);
    EXPECT_EQ(restored.read_obj<uint64_t>(GuestAddress(0)).value(), 99u);
}

TEST(GuestMemoryFile, ShortFileIsRefusedNamingBothSizes) {
    TemporaryFile file;
    ASSERT_EQ(::ftruncate(file.fd(), 6 * PAGE - 1), 0);
    auto const restored = GuestMemory::create_from_file(two_regions(), file.fd(), "'mem.bin'");
    ASSERT_FALSE(restored.has_value());
    EXPECT_NE(restored.error().message().find("too short"), std::string::npos) << restored.error().message();
    EXPECT_NE(restored.error().message().find(std::to_string(6 * PAGE - 1)), std::string::npos);
    EXPECT_NE(restored.error().message().find(std::to_string(6 * PAGE)), std::string::npos);
    EXPECT_NE(restored.error().message().find("'mem.bin'"), std::string::npos);
}

TEST(GuestMemoryFile, LongerFileIsRefused) {
    TemporaryFile file;
    ASSERT_EQ(::ftruncate(file.fd(), 7 * PAGE), 0);
    auto const restored = GuestMemory::create_from_file(two_regions(), file.fd(), "test");
    ASSERT_FALSE(restored.has_value());
    EXPECT_NE(restored.error().message().find("longer"), std::string::npos) << restored.error().message();
}

TEST(GuestMemoryFile, NonRegularFileIsRefused) {
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    auto const restored = GuestMemory::create_from_file(two_regions(), pipe_fds[0], "test");
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    ASSERT_FALSE(restored.has_value());
    EXPECT_NE(restored.error().message().find("not a regular file"), std::string::npos);
}

TEST(GuestMemoryFile, RewritingShrinksAnOlderLongerFile) {
    TemporaryFile file;
    ASSERT_EQ(::ftruncate(file.fd(), 64 * PAGE), 0);
    auto memory = MUST(GuestMemory::create(two_regions()));
    MUST(memory.write_to_file(file.fd()));
    EXPECT_EQ(file.size(), 6 * PAGE);
}

} // namespace
} // namespace kvmm

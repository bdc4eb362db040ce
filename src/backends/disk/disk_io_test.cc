#include "backends/disk/disk_io.h"

#include "backends/disk/test_files.h"
#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace kvmm {
namespace {

using testing::TemporaryDirectory;

TEST(DiskIo, CheckedTransferLength_RejectsTooManySegmentsAndOversizedTotals) {
    std::vector<iovec> segments(disk_io::MAX_SEGMENTS, iovec { nullptr, 1 });
    EXPECT_EQ(disk_io::checked_transfer_length(segments), static_cast<int64_t>(disk_io::MAX_SEGMENTS));
    segments.push_back(iovec { nullptr, 1 });
    EXPECT_EQ(disk_io::checked_transfer_length(segments), -EINVAL);

    // Two lengths whose sum wraps around 64 bits must not pass as a small total.
    std::vector<iovec> wrapping { { nullptr, ~size_t { 0 } }, { nullptr, 2 } };
    EXPECT_EQ(disk_io::checked_transfer_length(wrapping), -EINVAL);
    std::vector<iovec> at_limit { { nullptr, disk_io::MAX_TRANSFER_BYTES } };
    EXPECT_EQ(disk_io::checked_transfer_length(at_limit), static_cast<int64_t>(disk_io::MAX_TRANSFER_BYTES));
    at_limit.push_back({ nullptr, 1 });
    EXPECT_EQ(disk_io::checked_transfer_length(at_limit), -EINVAL);
}

TEST(DiskIo, WriteZeroesByWriting_ZerosExactlyTheRange) {
    TemporaryDirectory directory;
    auto const path = (directory / "zeros.img");
    auto const original = testing::make_pattern(300 * 1024, 7);
    testing::write_file(path, original);
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    // Longer than the 64 KiB zero buffer and unaligned at both ends.
    uint64_t const offset = 1000;
    uint64_t const length = 200 * 1024 + 3;
    EXPECT_EQ(disk_io::write_zeroes_by_writing(fd, offset, length, true), 0);
    ::close(fd);
    auto const after = testing::read_range(path, 0, original.size());
    for (size_t i = 0; i < after.size(); ++i) {
        bool const inside = i >= offset && i < offset + length;
        ASSERT_EQ(after[i], inside ? std::byte { 0 } : original[i]) << "byte " << i;
    }
}

TEST(DiskIo, Read_OnAWriteOnlyFd_ReturnsMinusErrno) {
    TemporaryDirectory directory;
    auto const path = (directory / "write-only.img");
    testing::write_file(path, testing::make_pattern(4096, 8));
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    std::vector<std::byte> buffer(512);
    iovec segment { buffer.data(), buffer.size() };
    EXPECT_EQ(disk_io::read(fd, 0, { &segment, 1 }), -EBADF);
    ::close(fd);
}

} // namespace
} // namespace kvmm

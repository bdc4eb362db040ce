#include "backends/disk/disk_image.h"

#include "backends/disk/test_files.h"
#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>

#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

namespace kvmm {
namespace {

using testing::TemporaryDirectory;

bool contains(std::string const& text, std::string const& part) { return text.find(part) != std::string::npos; }

TEST(DiskImage, RegularFile_OpensWithItsSizeAndMode) {
    TemporaryDirectory directory;
    auto const path = (directory / "disk.img");
    testing::write_file(path, testing::make_pattern(12345, 1));
    {
        auto image = MUST(DiskImage::open(path, false));
        EXPECT_EQ(image.size_bytes(), 12345u);
        EXPECT_FALSE(image.read_only());
        EXPECT_FALSE(image.is_block_device());
        EXPECT_EQ(image.path(), path);
        EXPECT_GE(image.fd(), 0);
        EXPECT_TRUE(::fcntl(image.fd(), F_GETFD) & FD_CLOEXEC);
        EXPECT_EQ(::fcntl(image.fd(), F_GETFL) & O_ACCMODE, O_RDWR);
    }
    auto read_only = MUST(DiskImage::open((directory / "disk.img"), true));
    EXPECT_TRUE(read_only.read_only());
    EXPECT_EQ(::fcntl(read_only.fd(), F_GETFL) & O_ACCMODE, O_RDONLY);
}

TEST(DiskImage, ResizedOnTheHost_CurrentSizeSeesItAndSizeBytesKeepsTheOpenSize) {
    TemporaryDirectory directory;
    auto const path = (directory / "disk.img");
    testing::write_file(path, testing::make_pattern(4096, 1));
    auto image = MUST(DiskImage::open(path, false));
    ASSERT_EQ(::truncate(path.c_str(), 1 << 20), 0);
    EXPECT_EQ(MUST(image.current_size()), uint64_t { 1 } << 20);
    EXPECT_EQ(image.size_bytes(), 4096u);
}

TEST(DiskImage, IsSameFile_ComparesTheFileNotTheName) {
    TemporaryDirectory directory;
    auto const path = (directory / "disk.img");
    testing::write_file(path, testing::make_pattern(4096, 1));
    testing::write_file((directory / "other.img"), testing::make_pattern(4096, 2));
    ASSERT_EQ(::symlink(path.c_str(), (directory / "link.img").c_str()), 0);
    auto image = MUST(DiskImage::open(path, false));
    EXPECT_TRUE(image.is_same_file(path));
    EXPECT_TRUE(image.is_same_file((directory / "link.img")));
    EXPECT_FALSE(image.is_same_file((directory / "other.img")));
    EXPECT_FALSE(image.is_same_file((directory / "absent.img")));
}

TEST(DiskImage, MissingFile_ErrorNamesPathAndReason) {
    TemporaryDirectory directory;
    auto const path = (directory / "absent.img");
    auto image = DiskImage::open(path, false);
    ASSERT_FALSE(image.has_value());
    EXPECT_TRUE(contains(image.error().message(), path)) << image.error().message();
    EXPECT_TRUE(contains(image.error().message(), "No such file or directory")) << image.error().message();
    EXPECT_EQ(image.error().error_number(), ENOENT);
}

TEST(DiskImage, Directory_IsRejected) {
    TemporaryDirectory directory;
    auto read_only = DiskImage::open(directory.path(), true);
    ASSERT_FALSE(read_only.has_value());
    EXPECT_TRUE(contains(read_only.error().message(), "is a directory, not a regular file or a block device"))
        << read_only.error().message();
    EXPECT_TRUE(contains(read_only.error().message(), directory.path()));
    auto read_write = DiskImage::open(directory.path(), false);
    ASSERT_FALSE(read_write.has_value());
    EXPECT_TRUE(contains(read_write.error().message(), "is a directory")) << read_write.error().message();
}

// The path of every disk open: --disk, PUT /drives at boot, PATCH /drives path_on_host and
// qcow2 backing files all come here.
TEST(DiskImage, KernelPseudoFilesAreRefusedReadWriteAndReadOnly) {
    for (bool const read_only : { false, true }) {
        for (char const* path :
             { "/proc/self/mem", "/proc/self/environ", "/sys/kernel/mm/transparent_hugepage/enabled" }) {
            auto image = DiskImage::open(path, read_only);
            ASSERT_FALSE(image.has_value()) << path;
            EXPECT_TRUE(contains(image.error().message(), "kernel files cannot back a disk"))
                << image.error().message();
        }
    }
}

TEST(DiskImage, FifoIsRefusedWithoutBlockingOnItsOpen) {
    TemporaryDirectory directory;
    auto const fifo = directory / "disk.fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    auto image = DiskImage::open(fifo, true);
    ASSERT_FALSE(image.has_value());
    EXPECT_TRUE(contains(image.error().message(), "a FIFO")) << image.error().message();
}

TEST(DiskImage, ReadOnlyFileOpenedForWriting_FailsAndOpensReadOnly) {
    TemporaryDirectory directory;
    auto const path = (directory / "sealed.img");
    testing::write_file(path, testing::make_pattern(4096, 2));
    ASSERT_EQ(::chmod(path.c_str(), 0444), 0);
    // root ignores file modes; the immutable attribute stops root too.
    bool immutable = false;
    if (::geteuid() == 0) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        int flags = 0;
        ASSERT_EQ(::ioctl(fd, FS_IOC_GETFLAGS, &flags), 0);
        flags |= FS_IMMUTABLE_FL;
        immutable = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
        ::close(fd);
        if (!immutable)
            GTEST_SKIP() << "running as root without the right to set the immutable attribute";
    }
    auto image = DiskImage::open(path, false);
    ASSERT_FALSE(image.has_value());
    EXPECT_TRUE(contains(image.error().message(), path));
    EXPECT_TRUE(contains(image.error().message(), "read-write"));
    EXPECT_TRUE(image.error().error_number() == EACCES || image.error().error_number() == EPERM)
        << image.error().message();
    EXPECT_TRUE(DiskImage::open(path, true).has_value());
    if (immutable) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        int flags = 0;
        ::ioctl(fd, FS_IOC_GETFLAGS, &flags);
        flags &= ~FS_IMMUTABLE_FL;
        EXPECT_EQ(::ioctl(fd, FS_IOC_SETFLAGS, &flags), 0); // else the directory cannot be removed
        ::close(fd);
    }
}

TEST(DiskImage, WriterLock_ExcludesOtherWritersAndReadersUntilClosed) {
    TemporaryDirectory directory;
    auto const path = (directory / "locked.img");
    testing::write_file(path, testing::make_pattern(4096, 3));
    {
        auto writer = MUST(DiskImage::open(path, false));
        auto second_writer = DiskImage::open(path, false);
        ASSERT_FALSE(second_writer.has_value());
        EXPECT_TRUE(contains(second_writer.error().message(), path));
        EXPECT_TRUE(contains(second_writer.error().message(), "locked")) << second_writer.error().message();
        EXPECT_EQ(second_writer.error().error_number(), EWOULDBLOCK);
        auto reader = DiskImage::open(path, true);
        ASSERT_FALSE(reader.has_value());
        EXPECT_TRUE(contains(reader.error().message(), "locked"));
    }
    // The writer is gone, and its lock with it.
    EXPECT_TRUE(DiskImage::open(path, false).has_value());
}

TEST(DiskImage, ReaderLock_IsSharedButExcludesWriters) {
    TemporaryDirectory directory;
    auto const path = (directory / "shared.img");
    testing::write_file(path, testing::make_pattern(4096, 4));
    auto first = MUST(DiskImage::open(path, true));
    auto second = DiskImage::open(path, true);
    EXPECT_TRUE(second.has_value());
    auto writer = DiskImage::open(path, false);
    ASSERT_FALSE(writer.has_value());
    EXPECT_TRUE(contains(writer.error().message(), "locked"));
}

TEST(DiskImage, DeviceId_IsStablePerFileAndFitsVirtioBlkId) {
    TemporaryDirectory directory;
    testing::write_file((directory / "a.img"), testing::make_pattern(512, 5));
    testing::write_file((directory / "b.img"), testing::make_pattern(512, 6));
    std::string first_id;
    {
        auto image = MUST(DiskImage::open((directory / "a.img"), true));
        first_id = image.device_id();
    }
    auto again = MUST(DiskImage::open((directory / "a.img"), true));
    auto other = MUST(DiskImage::open((directory / "b.img"), true));
    EXPECT_EQ(again.device_id(), first_id);
    EXPECT_NE(other.device_id(), first_id);
    EXPECT_LE(first_id.size(), 20u);
    EXPECT_FALSE(first_id.empty());
}

} // namespace
} // namespace kvmm

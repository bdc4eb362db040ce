#include "base/storage_file_policy.h"

#include "base/testing/temporary_directory.h"
#include "base/unique_fd.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

namespace kvmm {
namespace {

using testing::TemporaryDirectory;

void expect_refused(Expected<void> const& result, std::string_view fragment) {
    ASSERT_FALSE(result) << "accepted; expected an error with '" << fragment << "'";
    EXPECT_NE(result.error().message().find(fragment), std::string::npos) << result.error().message();
}

TEST(StoragePolicy, ProcSelfMemIsRefusedBeforeAndAfterTheOpen) {
    expect_refused(check_storage_path("/proc/self/mem", "disk image"), "under /proc");
    UniqueFd fd(::open("/proc/self/mem", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd.is_valid());
    expect_refused(check_storage_file(fd.get(), "/proc/self/mem", "disk image"), "procfs");
}

TEST(StoragePolicy, SymlinkIntoProcIsRefusedByWhereItLeads) {
    TemporaryDirectory directory;
    auto const link = directory / "innocent.img";
    std::filesystem::create_symlink("/proc/self/mem", link);
    expect_refused(check_storage_path(link, "disk image"), "under /proc");
}

TEST(StoragePolicy, SysfsFilesAreRefused) {
    expect_refused(check_storage_path("/sys/kernel/mm/transparent_hugepage/enabled", "disk image"), "under /sys");
    UniqueFd fd(::open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC));
    if (fd.is_valid()) // present on every kernel with THP; the path check above is the main one
        expect_refused(check_storage_file(fd.get(), "thp", "disk image"), "sysfs");
}

TEST(StoragePolicy, CharacterDevicesFifosAndDirectoriesAreRefusedBeforeOpening) {
    TemporaryDirectory directory;
    auto const fifo = directory / "fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    expect_refused(check_storage_path(fifo, "disk image"), "a FIFO");
    expect_refused(check_storage_path("/dev/null", "disk image"), "a character device");
    expect_refused(check_storage_path(directory.path(), "disk image"), "a directory");
}

TEST(StoragePolicy, RegularFileAndMissingPathPass) {
    TemporaryDirectory directory;
    auto const image = directory / "disk.img";
    UniqueFd fd(::open(image.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd.is_valid());
    EXPECT_TRUE(check_storage_path(image, "disk image"));
    EXPECT_TRUE(check_storage_file(fd.get(), image, "disk image"));
    EXPECT_TRUE(check_storage_path(directory / "missing.img", "disk image")) << "the open reports it";
}

} // namespace
} // namespace kvmm

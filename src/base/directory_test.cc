#include "base/directory.h"

#include "base/testing/scoped_umask.h"
#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace kvmm {
namespace {

using testing::TemporaryDirectory;

std::string contents_of(std::string const& path) {
    std::ifstream file(path);
    std::ostringstream text;
    text << file.rdbuf();
    return text.str();
}

class DirectoryTest : public ::testing::Test {
protected:
    TemporaryDirectory temporary { "kvmm-directory" };
    std::string const victim = temporary / "victim";
    void SetUp() override { std::ofstream(victim) << "precious"; }
};

TEST_F(DirectoryTest, FileOpenThroughAPlantedLinkIsRefusedAndTheTargetUntouched) {
    auto directory = MUST(Directory::open(temporary.path()));
    std::filesystem::create_symlink(victim, temporary / "vm.kvmm.log");
    auto opened = directory.open_file("vm.kvmm.log", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_FALSE(opened);
    EXPECT_NE(opened.error().message().find("is a symbolic link"), std::string::npos) << opened.error().message();
    EXPECT_EQ(contents_of(victim), "precious");
    EXPECT_FALSE(directory.read_file("vm.kvmm.log", 100)) << "reads refuse the link too";
}

TEST_F(DirectoryTest, SubdirectoryThatIsALinkIsRefused) {
    auto directory = MUST(Directory::open(temporary.path()));
    std::filesystem::create_directory(temporary / "elsewhere");
    std::filesystem::create_directory_symlink(temporary / "elsewhere", temporary / "runtime");
    auto const sub = directory.subdirectory("runtime", mode_t { 0700 });
    ASSERT_FALSE(sub);
    EXPECT_NE(sub.error().message().find("is a symbolic link"), std::string::npos) << sub.error().message();
}

TEST_F(DirectoryTest, AtomicWriteReplacesAPlantedTemporaryLinkInsteadOfFollowingIt) {
    kvmm::testing::ScopedUmask const open_umask(0);
    auto directory = MUST(Directory::open(temporary.path()));
    std::filesystem::create_symlink(victim, temporary / "runtime.json.tmp");
    ASSERT_TRUE(directory.write_atomically("runtime.json", "{}\n", 0600));
    EXPECT_EQ(contents_of(victim), "precious");
    EXPECT_EQ(contents_of(temporary / "runtime.json"), "{}\n");
    struct stat status {};
    ASSERT_EQ(::lstat((temporary / "runtime.json").c_str(), &status), 0);
    EXPECT_TRUE(S_ISREG(status.st_mode));
    EXPECT_EQ(status.st_mode & 07777, 0600u);
    EXPECT_FALSE(std::filesystem::exists(temporary / "runtime.json.tmp"));
}

TEST_F(DirectoryTest, NamesWithSlashesOrDotsAreRefused) {
    auto directory = MUST(Directory::open(temporary.path()));
    for (std::string_view const name : { "../victim", "a/b", ".", "..", "" })
        EXPECT_FALSE(directory.open_file(name, O_RDONLY)) << name;
}

TEST_F(DirectoryTest, ReadFileOfAMissingFileIsNulloptAndAnOversizedOneAnError) {
    auto directory = MUST(Directory::open(temporary.path()));
    EXPECT_EQ(MUST(directory.read_file("missing", 100)), std::nullopt);
    EXPECT_EQ(MUST(directory.read_file("victim", 100)), "precious");
    EXPECT_FALSE(directory.read_file("victim", 3));
}

} // namespace
} // namespace kvmm

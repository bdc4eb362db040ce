#include "jailer/jail_paths.h"

#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace kvmm::jailer {
namespace {

using kvmm::testing::TemporaryDirectory;

void write_file(std::string const& path, std::string const& text, mode_t mode) {
    std::ofstream(path) << text;
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

bool exists(std::string const& path) {
    struct stat status {};
    return ::lstat(path.c_str(), &status) == 0;
}

TEST(ChrootBase, AnOwnedDirectoryClosedToOthersIsAccepted) {
    TemporaryDirectory directory("jail-base");
    ASSERT_EQ(::chmod(directory.path().c_str(), 0755), 0);
    EXPECT_TRUE(open_chroot_base(directory.path()).has_value());
}

TEST(ChrootBase, SymlinkIsRefused) {
    TemporaryDirectory directory("jail-base");
    auto const link = directory / "link";
    ASSERT_EQ(::symlink(directory.path().c_str(), link.c_str()), 0);
    auto const opened = open_chroot_base(link);
    ASSERT_FALSE(opened.has_value());
    EXPECT_NE(opened.error().message().find("is a symlink"), std::string::npos) << opened.error().message();
}

TEST(ChrootBase, WorldWritableDirectoryIsRefused) {
    TemporaryDirectory directory("jail-base");
    ASSERT_EQ(::chmod(directory.path().c_str(), 01777), 0);
    auto const opened = open_chroot_base(directory.path());
    ASSERT_FALSE(opened.has_value());
    EXPECT_NE(opened.error().message().find("writable by everyone (mode 1777)"), std::string::npos)
        << opened.error().message();
}

TEST(ChrootBase, MissingDirectoryOrAFileIsRefused) {
    TemporaryDirectory directory("jail-base");
    EXPECT_NE(open_chroot_base(directory / "none").error().message().find("No such file"), std::string::npos);
    write_file(directory / "file", "x", 0644);
    EXPECT_NE(open_chroot_base(directory / "file").error().message().find("Not a directory"), std::string::npos);
}

TEST(ExecFile, MustBeARegularExecutableFile) {
    TemporaryDirectory directory("jail-exec");
    write_file(directory / "plain", "x", 0644);
    write_file(directory / "program", "x", 0755);
    EXPECT_NE(open_exec_file(directory / "plain").error().message().find("is not executable (mode 0644)"),
              std::string::npos);
    EXPECT_NE(open_exec_file(directory.path()).error().message().find("not a regular file"), std::string::npos);
    EXPECT_NE(open_exec_file(directory / "none").error().message().find("No such file"), std::string::npos);
    EXPECT_TRUE(open_exec_file(directory / "program").has_value());
}

class JailTreeTest : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_EQ(::chmod(m_base.path().c_str(), 0755), 0);
        m_tree.emplace(MUST(open_chroot_base(m_base.path())));
    }
    TemporaryDirectory m_base { "jail-tree" };
    std::optional<JailTree> m_tree;
};

TEST_F(JailTreeTest, RemovesExactlyWhatItCreated) {
    ASSERT_EQ(::mkdir((m_base / "kvmm").c_str(), 0755), 0); // an earlier jail's exec directory
    ASSERT_TRUE(m_tree->make_directories("kvmm/vm/root/dev/net", 0750).has_value());
    struct stat status {};
    ASSERT_EQ(::stat((m_base / "kvmm/vm/root/dev").c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 07777, 0750u); // not reduced by the umask
    auto source = MUST(open_exec_file("/proc/self/exe"));
    ASSERT_TRUE(m_tree->copy_file(source.get(), "kvmm/vm/root/copy", 0555).has_value());
    ASSERT_EQ(::stat((m_base / "kvmm/vm/root/copy").c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 07777, 0555u);
    EXPECT_EQ(status.st_uid, 0u);
    EXPECT_GT(status.st_size, 0);

    EXPECT_TRUE(m_tree->remove_created().empty());
    EXPECT_FALSE(exists(m_base / "kvmm/vm"));
    EXPECT_TRUE(exists(m_base / "kvmm"));
}

TEST_F(JailTreeTest, KeepsFilesTheAdministratorPlacedInTheJailRoot) {
    ASSERT_TRUE(std::filesystem::create_directories(m_base / "kvmm/vm/root"));
    write_file(m_base / "kvmm/vm/root/kernel", "k", 0644);
    ASSERT_TRUE(m_tree->make_directories("kvmm/vm/root/dev", 0755).has_value());
    EXPECT_TRUE(m_tree->remove_created().empty());
    EXPECT_FALSE(exists(m_base / "kvmm/vm/root/dev"));
    EXPECT_TRUE(exists(m_base / "kvmm/vm/root/kernel"));
}

TEST_F(JailTreeTest, SymlinkInsideTheBaseIsNotFollowed) {
    TemporaryDirectory elsewhere("jail-elsewhere");
    ASSERT_EQ(::symlink(elsewhere.path().c_str(), (m_base / "kvmm").c_str()), 0);
    auto const made = m_tree->make_directories("kvmm/vm/root", 0755);
    ASSERT_FALSE(made.has_value());
    EXPECT_NE(made.error().message().find("no symlinks"), std::string::npos) << made.error().message();
    EXPECT_FALSE(exists(elsewhere / "vm"));
}

TEST_F(JailTreeTest, DirectoryOfAnotherUserOrDotDotIsRefused) {
    ASSERT_TRUE(std::filesystem::create_directories(m_base / "kvmm/vm/root/dev"));
    ASSERT_EQ(::chown((m_base / "kvmm/vm/root/dev").c_str(), 4321, 4321), 0);
    auto const made = m_tree->make_directories("kvmm/vm/root/dev/net", 0755);
    ASSERT_FALSE(made.has_value());
    EXPECT_NE(made.error().message().find("owned by uid 4321, not root"), std::string::npos) << made.error().message();
    EXPECT_FALSE(exists(m_base / "kvmm/vm/root/dev/net"));
    auto const escaped = m_tree->make_directories("kvmm/../../escape", 0755);
    ASSERT_FALSE(escaped.has_value());
    EXPECT_NE(escaped.error().message().find("'..'"), std::string::npos) << escaped.error().message();
}

TEST(JailTreeRoot, JailRootMayBelongToTheJailedUser) {
    kvmm::testing::TemporaryDirectory base("jail-tree");
    ASSERT_EQ(::chmod(base.path().c_str(), 0755), 0);
    ASSERT_TRUE(std::filesystem::create_directories(base / "kvmm/vm/root"));
    ASSERT_EQ(::chown((base / "kvmm/vm/root").c_str(), 4321, 4321), 0);
    JailTree tree(MUST(open_chroot_base(base.path())), "kvmm/vm/root");
    EXPECT_TRUE(tree.make_directories("kvmm/vm/root/dev", 0755).has_value());
}

TEST_F(JailTreeTest, AnExistingFileIsNeverOverwritten) {
    ASSERT_TRUE(m_tree->make_directories("kvmm/vm/root", 0755).has_value());
    write_file(m_base / "kvmm/vm/root/kvmm", "previous", 0644);
    auto source = MUST(open_exec_file("/proc/self/exe"));
    auto const copied = m_tree->copy_file(source.get(), "kvmm/vm/root/kvmm", 0555);
    ASSERT_FALSE(copied.has_value());
    EXPECT_NE(copied.error().message().find("already exists"), std::string::npos);
    std::ifstream kept(m_base / "kvmm/vm/root/kvmm");
    std::string text;
    kept >> text;
    EXPECT_EQ(text, "previous");
}

TEST_F(JailTreeTest, RootOwnedFileIsLinkedAndAWritableOneCopied) {
    ASSERT_TRUE(m_tree->make_directories("kvmm/vm/root", 0755).has_value());
    write_file(m_base / "closed", "closed", 0755);
    write_file(m_base / "open", "open", 0777);
    struct stat source {};
    struct stat target {};
    auto closed = MUST(open_regular_file(m_base / "closed"));
    // The temporary base and its files are on one file system, so the link succeeds.
    EXPECT_TRUE(MUST(m_tree->link_or_copy_file(closed.get(), "kvmm/vm/root/closed", 0555)));
    ASSERT_EQ(::stat((m_base / "closed").c_str(), &source), 0);
    ASSERT_EQ(::stat((m_base / "kvmm/vm/root/closed").c_str(), &target), 0);
    EXPECT_EQ(source.st_ino, target.st_ino);

    auto open = MUST(open_regular_file(m_base / "open"));
    EXPECT_FALSE(MUST(m_tree->link_or_copy_file(open.get(), "kvmm/vm/root/open", 0555)));
    ASSERT_EQ(::stat((m_base / "open").c_str(), &source), 0);
    ASSERT_EQ(::stat((m_base / "kvmm/vm/root/open").c_str(), &target), 0);
    EXPECT_NE(source.st_ino, target.st_ino);
    EXPECT_EQ(target.st_mode & 07777, 0555u);

    EXPECT_TRUE(m_tree->remove_created().empty());
    EXPECT_FALSE(exists(m_base / "kvmm"));
    EXPECT_TRUE(exists(m_base / "closed")); // removing the link kept the original
}

TEST_F(JailTreeTest, DeviceNodeBelongsToTheJailedUser) {
    ASSERT_TRUE(m_tree->make_directories("kvmm/vm/root/dev", 0755).has_value());
    ASSERT_TRUE(m_tree->make_device("kvmm/vm/root/dev/null", makedev(1, 3), 1234, 4321).has_value());
    struct stat status {};
    ASSERT_EQ(::lstat((m_base / "kvmm/vm/root/dev/null").c_str(), &status), 0);
    EXPECT_TRUE(S_ISCHR(status.st_mode));
    EXPECT_EQ(status.st_mode & 07777, 0600u);
    EXPECT_EQ(status.st_rdev, makedev(1, 3));
    EXPECT_EQ(status.st_uid, 1234u);
    EXPECT_EQ(status.st_gid, 4321u);
    EXPECT_TRUE(m_tree->remove_created().empty());
    EXPECT_FALSE(exists(m_base / "kvmm"));
}

TEST(DeviceNumber, IsReadFromACharacterDevice) {
    EXPECT_EQ(MUST(character_device_number("/dev/null")), makedev(1, 3));
    EXPECT_FALSE(character_device_number("/proc/self/exe").has_value());
}

} // namespace
} // namespace kvmm::jailer

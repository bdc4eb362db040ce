#include "manager/vm_jail.h"

#include "backends/disk/qcow2_file.h"
#include "base/testing/temporary_directory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>

namespace kvmm {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string error_of(auto const& result) { return result ? std::string {} : result.error().message(); }

TEST(ParseUidRange, AcceptsStartAndCount) {
    auto range = parse_uid_range("100000:65536");
    ASSERT_TRUE(range) << range.error().message();
    EXPECT_EQ(range->first, 100000u);
    EXPECT_EQ(range->second, 65536u);
}

TEST(ParseUidRange, RefusesMalformedSystemEmptyAndOverflowingRangesNamingThem) {
    EXPECT_THAT(error_of(parse_uid_range("100000")), HasSubstr("'100000' is not START:COUNT"));
    EXPECT_THAT(error_of(parse_uid_range("x:5")), HasSubstr("'x'"));
    EXPECT_THAT(error_of(parse_uid_range("100000:-1")), HasSubstr("'-1'"));
    EXPECT_THAT(error_of(parse_uid_range("0:100")), HasSubstr("start 0 is below 1000"));
    EXPECT_THAT(error_of(parse_uid_range("999:100")), HasSubstr("999"));
    EXPECT_THAT(error_of(parse_uid_range("5000:0")), HasSubstr("empty"));
    EXPECT_THAT(error_of(parse_uid_range("4294967000:1000")), HasSubstr("goes past"));
}

TEST(AssignVmUid, KeepsAVmsUidAndGivesEveryVmItsOwnWithinTheRange) {
    testing::TemporaryDirectory directory { "kvmm-jail" };
    auto const uids = fs::path(directory.path()) / "uids";
    std::set<uint32_t> seen;
    for (int i = 0; i < 8; ++i) {
        auto uid = assign_vm_uid(uids, "vm" + std::to_string(i), 20000, 8);
        ASSERT_TRUE(uid) << uid.error().message();
        EXPECT_GE(*uid, 20000u);
        EXPECT_LT(*uid, 20008u);
        seen.insert(*uid);
    }
    EXPECT_EQ(seen.size(), 8u);
    // The same VM asks again: the same uid, not a new one.
    uint32_t const first = MUST(assign_vm_uid(uids, "vm0", 20000, 8));
    EXPECT_EQ(MUST(assign_vm_uid(uids, "vm0", 20000, 8)), first);
    EXPECT_THAT(error_of(assign_vm_uid(uids, "vm8", 20000, 8)), HasSubstr("every uid of the range 20000:8"));
    // Forgotten (undefined): its uid is free for another VM.
    forget_vm_uid(uids, "vm3");
    EXPECT_TRUE(assign_vm_uid(uids, "vm8", 20000, 8));
}

TEST(AssignVmUid, ARecordOutsideANewRangeIsReplaced) {
    testing::TemporaryDirectory directory { "kvmm-jail" };
    auto const uids = fs::path(directory.path()) / "uids";
    uint32_t const old_uid = MUST(assign_vm_uid(uids, "web", 20000, 4));
    uint32_t const new_uid = MUST(assign_vm_uid(uids, "web", 30000, 4));
    EXPECT_LT(old_uid, 20004u);
    EXPECT_GE(new_uid, 30000u);
    EXPECT_EQ(MUST(assign_vm_uid(uids, "web", 30000, 4)), new_uid);
}

TEST(AssignVmUid, RefusesANameThatIsNoVmName) {
    testing::TemporaryDirectory directory { "kvmm-jail" };
    EXPECT_FALSE(assign_vm_uid(fs::path(directory.path()) / "uids", "../x", 20000, 4));
    EXPECT_FALSE(fs::exists(fs::path(directory.path()) / "x"));
}

TEST(JailId, KeepsOnlyWhatTheJailerAcceptsAndStaysDistinct) {
    EXPECT_EQ(jail_id("web_1.prod", 100001), "web-1-prod-100001");
    EXPECT_NE(jail_id("a.b", 100001), jail_id("a_b", 100002));
    std::string const id = jail_id(std::string(64, 'x'), 4294967294u);
    EXPECT_LE(id.size(), 64u);
    EXPECT_TRUE(std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(c) || c == '-'; }));
}

// prepare_jail()/restore_jail() change owners: root only.
class PreparedJailTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0)
            GTEST_SKIP() << "changing file owners needs root";
        m_settings.jailer_binary = "/usr/bin/kvmm-jailer";
        m_settings.base = fs::path(m_directory.path()) / "jail";
        m_settings.uid_start = 50000;
        m_settings.uid_count = 10;
        fs::create_directories(m_settings.base);
        std::ofstream(fs::path(m_directory.path()) / "kernel") << "kernel";
        ::chmod((fs::path(m_directory.path()) / "kernel").c_str(), 0644);
        std::ofstream(fs::path(m_directory.path()) / "disk.img") << "disk";
        ::chown((fs::path(m_directory.path()) / "disk.img").c_str(), 1234, 5678);
        ::chmod((fs::path(m_directory.path()) / "disk.img").c_str(), 0640);
        std::ofstream(fs::path(m_directory.path()) / "seed.img") << "seed";
        ::chmod((fs::path(m_directory.path()) / "seed.img").c_str(), 0444);
        m_definition.name = "vm_1";
        m_definition.kernel = (fs::path(m_directory.path()) / "kernel").string();
        m_definition.disks.resize(2);
        m_definition.disks[0].id = "root";
        m_definition.disks[0].path = (fs::path(m_directory.path()) / "disk.img").string();
        m_definition.disks[1].id = "seed";
        m_definition.disks[1].path = (fs::path(m_directory.path()) / "seed.img").string();
        m_definition.disks[1].read_only = true;
    }

    struct stat status_of(fs::path const& path) {
        struct stat status {};
        EXPECT_EQ(::stat(path.c_str(), &status), 0) << path;
        return status;
    }

    testing::TemporaryDirectory m_directory { "kvmm-jail" };
    JailSettings m_settings;
    VmDefinition m_definition;
};

TEST_F(PreparedJailTest, HandsTheFilesInAndGivesOnlyTheWritableDiskToTheVmUntilRestored) {
    auto jail = prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, { "--log-level", "info" });
    ASSERT_TRUE(jail) << jail.error().message();
    EXPECT_EQ(jail->id, "vm-1-50003");
    EXPECT_EQ(jail->root, m_settings.base / "kvmm" / "vm-1-50003" / "root");
    EXPECT_EQ(jail->inside.kernel, "/kernel");
    EXPECT_EQ(jail->inside.disks[0].path, "/disk0");
    EXPECT_EQ(jail->inside.disks[1].path, "/disk1");
    // Hard links: the same inodes.
    EXPECT_EQ(status_of(jail->root / "disk0").st_ino, status_of(fs::path(m_directory.path()) / "disk.img").st_ino);
    EXPECT_EQ(status_of(jail->root / "kernel").st_ino, status_of(fs::path(m_directory.path()) / "kernel").st_ino);
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "disk.img").st_uid, 50003u);
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "disk.img").st_gid, 50003u);
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "seed.img").st_uid, 0u);
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "kernel").st_uid, 0u);
    EXPECT_EQ(status_of(jail->root / "machine.json").st_uid, 50003u);
    EXPECT_EQ(jail->control_socket, (jail->root / "control.sock").string());
    EXPECT_THAT(jail->argv, ::testing::IsSupersetOf({ std::string("--uid"), std::string("50003"), std::string("--"),
                                                      std::string("/machine.json"), std::string("--log-level") }));
    EXPECT_EQ(jail->argv.front(), "/usr/bin/kvmm-jailer");

    ASSERT_TRUE(restore_jail(m_settings, jail->id));
    auto const disk = status_of(fs::path(m_directory.path()) / "disk.img");
    EXPECT_EQ(disk.st_uid, 1234u);
    EXPECT_EQ(disk.st_gid, 5678u);
    EXPECT_EQ(disk.st_mode & 07777, 0640u);
    EXPECT_EQ(disk.st_nlink, 1u);
    EXPECT_FALSE(fs::exists(m_settings.base / "kvmm" / jail->id));
    EXPECT_TRUE(restore_jail(m_settings, jail->id)) << "a second restore finds nothing to do";
}

TEST_F(PreparedJailTest, AStaleJailOfTheSameVmIsRestoredBeforeTheNextStart) {
    auto first = prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, {});
    ASSERT_TRUE(first) << first.error().message();
    // kvmmd died without seeing the end of the run: the next start finds the jail.
    auto second = prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, {});
    ASSERT_TRUE(second) << second.error().message();
    ASSERT_TRUE(restore_jail(m_settings, second->id));
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "disk.img").st_uid, 1234u) << "the owner from before both runs";
}

TEST_F(PreparedJailTest, AFailureLeavesNoJailAndEveryOwnerRestored) {
    // The second disk cannot be handed in: the first one must be given back.
    ::chmod((fs::path(m_directory.path()) / "seed.img").c_str(), 0400);
    auto jail = prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, {});
    EXPECT_THAT(error_of(jail), HasSubstr("seed.img"));
    EXPECT_THAT(error_of(jail), HasSubstr("not readable by others"));
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "disk.img").st_uid, 1234u);
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "disk.img").st_nlink, 1u);
    EXPECT_TRUE(fs::is_empty(m_settings.base / "kvmm"));

    m_definition.disks[1].path = (fs::path(m_directory.path()) / "missing.img").string();
    EXPECT_THAT(error_of(prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, {})), HasSubstr("missing.img"));
    EXPECT_TRUE(fs::is_empty(m_settings.base / "kvmm"));
}

TEST_F(PreparedJailTest, ADiskReplacedDuringTheRunKeepsTheOwnerItHasNow) {
    auto jail = prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, {});
    ASSERT_TRUE(jail) << jail.error().message();
    // Another file now sits at the disk's path: restoring must not give it to the old owner.
    fs::remove(fs::path(m_directory.path()) / "disk.img");
    std::ofstream(fs::path(m_directory.path()) / "disk.img") << "other";
    EXPECT_THAT(error_of(restore_jail(m_settings, jail->id)), HasSubstr("no longer the file"));
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "disk.img").st_uid, 0u);
    EXPECT_FALSE(fs::exists(m_settings.base / "kvmm" / jail->id));
}

// A qcow2 disk's backing files are opened by kvmm at the names in the headers: a relative name
// against the image's directory (in the jail "/", where /disk0 is), an absolute one as it is.
TEST_F(PreparedJailTest, AQcow2DisksBackingChainIsLinkedWhereKvmmLooksForItReadOnly) {
    auto const base = fs::path(m_directory.path()) / "base.raw";
    std::ofstream(base) << std::string(65536, 'b');
    ::chmod(base.c_str(), 0644);
    qcow2::CreateOptions middle_options;
    middle_options.backing_file = base.string(); // absolute
    ASSERT_TRUE(qcow2::create_image((fs::path(m_directory.path()) / "middle.qcow2").string(), 65536, middle_options));
    qcow2::CreateOptions top_options;
    top_options.backing_file = "middle.qcow2"; // relative to the top image's directory
    top_options.backing_format = qcow2::BackingFormat::Qcow2;
    ASSERT_TRUE(qcow2::create_image((fs::path(m_directory.path()) / "top.qcow2").string(), 65536, top_options));
    m_definition.disks[0].path = (fs::path(m_directory.path()) / "top.qcow2").string();
    m_definition.disks[0].format = DiskConfig::Format::Qcow2;

    auto jail = prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, {});
    ASSERT_TRUE(jail) << jail.error().message();
    EXPECT_EQ(status_of(jail->root / "disk0").st_ino, status_of(fs::path(m_directory.path()) / "top.qcow2").st_ino);
    EXPECT_EQ(status_of(jail->root / "middle.qcow2").st_ino,
              status_of(fs::path(m_directory.path()) / "middle.qcow2").st_ino);
    auto const inside_base = jail->root / base.relative_path();
    EXPECT_EQ(status_of(inside_base).st_ino, status_of(base).st_ino);
    // Read-only: the backing files keep their owner; the directories made for them are root's.
    EXPECT_EQ(status_of(base).st_uid, 0u);
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "middle.qcow2").st_uid, 0u);
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "top.qcow2").st_uid, 50003u);
    auto const directory = status_of(inside_base.parent_path());
    EXPECT_EQ(directory.st_uid, 0u);
    EXPECT_EQ(directory.st_mode & 07777, 0755u);

    ASSERT_TRUE(restore_jail(m_settings, jail->id));
    EXPECT_EQ(status_of(base).st_nlink, 1u);
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "middle.qcow2").st_nlink, 1u);
    EXPECT_FALSE(fs::exists(m_settings.base / "kvmm" / jail->id));
}

TEST_F(PreparedJailTest, ABackingFileAtANameTheJailUsesOrUnreadable_IsRefusedNamingItAndLeavesNothing) {
    qcow2::CreateOptions options;
    options.backing_file = "kernel";
    ASSERT_TRUE(qcow2::create_image((fs::path(m_directory.path()) / "over-kernel.qcow2").string(), 65536, options));
    m_definition.disks[0].path = (fs::path(m_directory.path()) / "over-kernel.qcow2").string();
    m_definition.disks[0].format = DiskConfig::Format::Qcow2;
    auto jail = prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, {});
    EXPECT_THAT(error_of(jail), HasSubstr("backing file 'kernel'"));
    EXPECT_THAT(error_of(jail), HasSubstr("a name the jail uses for its own files"));
    EXPECT_TRUE(fs::is_empty(m_settings.base / "kvmm"));
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "over-kernel.qcow2").st_uid, 0u) << "its owner is restored";

    auto const secret = fs::path(m_directory.path()) / "secret.raw";
    std::ofstream(secret) << std::string(65536, 's');
    ::chmod(secret.c_str(), 0600);
    options.backing_file = secret.string();
    ASSERT_TRUE(qcow2::create_image((fs::path(m_directory.path()) / "over-secret.qcow2").string(), 65536, options));
    m_definition.disks[0].path = (fs::path(m_directory.path()) / "over-secret.qcow2").string();
    EXPECT_THAT(error_of(prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, {})),
                HasSubstr("not readable by others"));
    EXPECT_TRUE(fs::is_empty(m_settings.base / "kvmm"));
}

TEST_F(PreparedJailTest, ASavedVmsFilesAreHandedInForTheRunAndKvmmIsToldToRestoreFromThem) {
    auto const snapshot = fs::path(m_directory.path()) / "saved.snap";
    auto const memory = fs::path(m_directory.path()) / "saved.mem";
    for (auto const& path : { snapshot, memory }) {
        std::ofstream(path) << "saved";
        ::chmod(path.c_str(), 0600);
    }
    auto jail = prepare_jail(m_settings, "/usr/bin/kvmm", m_definition, 50003, {},
                             SavedRecord { snapshot.string(), memory.string() });
    ASSERT_TRUE(jail) << jail.error().message();
    EXPECT_EQ(status_of(jail->root / "snapshot.snap").st_ino, status_of(snapshot).st_ino);
    EXPECT_EQ(status_of(jail->root / "snapshot.mem").st_ino, status_of(memory).st_ino);
    EXPECT_EQ(status_of(memory).st_uid, 50003u) << "kvmm reads it as the VM's uid";
    EXPECT_THAT(jail->argv, ::testing::IsSupersetOf({ std::string("--restore-snapshot"), std::string("/snapshot.snap"),
                                                      std::string("--restore-memory"), std::string("/snapshot.mem") }));
    ASSERT_TRUE(restore_jail(m_settings, jail->id));
    EXPECT_EQ(status_of(memory).st_uid, 0u);
    EXPECT_EQ(status_of(memory).st_mode & 07777, 0600u);
    EXPECT_EQ(status_of(snapshot).st_nlink, 1u);
}

TEST_F(PreparedJailTest, TakeOutOfJail_MovesKvmmsFileToRootOrRefusesALinkPlantedInItsPlace) {
    auto const root = fs::path(m_directory.path()) / "root";
    fs::create_directories(root);
    std::ofstream(root / "snapshot.snap") << "state";
    ::chown((root / "snapshot.snap").c_str(), 50003, 50003);
    auto const destination = fs::path(m_directory.path()) / "out.snap";
    ASSERT_TRUE(take_out_of_jail(root, "snapshot.snap", 50003, destination.string()));
    EXPECT_FALSE(fs::exists(root / "snapshot.snap"));
    EXPECT_EQ(status_of(destination).st_uid, 0u);
    EXPECT_EQ(status_of(destination).st_mode & 07777, 0600u);

    // The jailed process owns its root: what it leaves there instead is not moved.
    fs::create_symlink("/etc/passwd", root / "snapshot.snap");
    EXPECT_THAT(error_of(take_out_of_jail(root, "snapshot.snap", 50003, destination.string())),
                HasSubstr("snapshot.snap"));
    fs::remove(root / "snapshot.snap");
    fs::create_hard_link(fs::path(m_directory.path()) / "disk.img", root / "snapshot.snap");
    EXPECT_THAT(error_of(take_out_of_jail(root, "snapshot.snap", 1234, destination.string())),
                HasSubstr("not the file kvmm wrote"));
    EXPECT_EQ(status_of(fs::path(m_directory.path()) / "disk.img").st_uid, 1234u);
    EXPECT_EQ(status_of(destination).st_uid, 0u) << "the destination is as it was";
}

} // namespace
} // namespace kvmm

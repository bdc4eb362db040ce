#include "manager/state_store.h"

#include "base/testing/temporary_directory.h"
#include "config/device_options.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <sstream>

namespace kvmm {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string read_text(fs::path const& path) {
    std::ifstream stream(path);
    std::stringstream contents;
    contents << stream.rdbuf();
    return contents.str();
}

mode_t mode_of(fs::path const& path) {
    struct stat status {};
    EXPECT_EQ(::stat(path.c_str(), &status), 0) << path;
    return status.st_mode & 07777;
}

VmDefinition sample(std::string name) {
    VmDefinition definition;
    definition.name = std::move(name);
    definition.kernel = "/boot/vmlinux";
    definition.vcpus = 2;
    definition.memory_size = 256ull << 20;
    definition.disks = { MUST(parse_disk_option("path=/var/lib/root.img,readonly=on", 0)) };
    definition.cpu_weight = 50;
    return definition;
}

TEST(StateStore, Open_CreatesPrivateDirectories) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto const root = fs::path(directory.path()) / "state";
    auto const store = StateStore::open(root);
    ASSERT_TRUE(store) << store.error().message();
    for (char const* sub : { "definitions", "runtime", "logs" }) {
        EXPECT_TRUE(fs::is_directory(root / sub)) << sub;
        EXPECT_EQ(mode_of(root / sub), 0700u) << sub;
    }
    EXPECT_TRUE(StateStore::open(root)); // opening again is fine
}

TEST(StateStore, SavedRecord_RoundTripsAndIsClearedAndADamagedOneIsAnError) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path()) / "state"));
    EXPECT_EQ(MUST(store.read_saved_record("vm1")), std::nullopt);
    SavedRecord const record { "/srv/vm1.snap", "/srv/vm1.snap.mem" };
    MUST(store.write_saved_record("vm1", record));
    EXPECT_EQ(MUST(store.read_saved_record("vm1")), record);
    MUST(store.clear_saved_record("vm1"));
    EXPECT_EQ(MUST(store.read_saved_record("vm1")), std::nullopt);
    MUST(store.clear_saved_record("vm1")); // none: fine

    std::ofstream(fs::path(directory.path()) / "state" / "saved" / "vm2.json") << R"({"snapshot_path": 7})";
    auto const damaged = store.read_saved_record("vm2");
    ASSERT_FALSE(damaged);
    EXPECT_NE(damaged.error().message().find("snapshot_path"), std::string::npos) << damaged.error().message();
    EXPECT_FALSE(store.write_saved_record("../escape", record));
    auto const snapshots = MUST(store.snapshot_dir("vm1"));
    EXPECT_TRUE(std::filesystem::is_directory(snapshots));
}

TEST(StateStore, OpenOverAFile_Fails) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    std::ofstream(fs::path(directory.path()) / "file") << "x";
    EXPECT_FALSE(StateStore::open(fs::path(directory.path()) / "file"));
}

TEST(StateStore, SavedDefinition_LoadsBackEqual) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    auto const definition = sample("alpha");
    ASSERT_TRUE(store.save_definition(definition));
    auto const loaded = store.load_definition("alpha");
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_EQ(*loaded, definition);
    EXPECT_EQ(mode_of(fs::path(directory.path()) / "definitions" / "alpha.toml"), 0600u);
    EXPECT_FALSE(fs::exists(fs::path(directory.path()) / "definitions" / "alpha.toml.tmp"));
    EXPECT_TRUE(store.has_definition("alpha"));
}

// A process that can write into the state tree (a VM's runtime directory, say) plants links
// at the names kvmmd writes as root; none of them may be followed.
TEST(StateStore, PlantedSymlinks_AreRefusedAndTheirTargetsUntouched) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    auto const victim = fs::path(directory.path()) / "victim";
    std::ofstream(victim) << "precious";

    fs::create_symlink(victim, fs::path(directory.path()) / "logs" / "web.kvmm.log");
    auto const log = store.open_kvmm_log("web");
    ASSERT_FALSE(log);
    EXPECT_THAT(log.error().message(), HasSubstr("web.kvmm.log' is a symbolic link"));

    fs::create_symlink(victim, fs::path(directory.path()) / "definitions" / "web.toml");
    EXPECT_FALSE(store.load_definition("web"));
    auto definition = sample("web");
    ASSERT_TRUE(store.save_definition(definition)) << "the link is replaced by the rename, not written through";
    EXPECT_FALSE(fs::is_symlink(fs::path(directory.path()) / "definitions" / "web.toml"));

    fs::create_directory(fs::path(directory.path()) / "elsewhere");
    fs::create_directory_symlink(fs::path(directory.path()) / "elsewhere",
                                 fs::path(directory.path()) / "runtime" / "db");
    auto const record = store.write_runtime_record("db", RuntimeRecord { 1, 2, "a", "c", "running" });
    ASSERT_FALSE(record);
    EXPECT_THAT(record.error().message(), HasSubstr("is a symbolic link"));
    EXPECT_FALSE(store.write_runtime_file("db", "machine.json", "{}"));
    EXPECT_TRUE(fs::is_empty(fs::path(directory.path()) / "elsewhere"));
    EXPECT_FALSE(store.read_runtime_record("db"));

    EXPECT_EQ(read_text(victim), "precious");
}

TEST(StateStore, SaveInvalidDefinition_WritesNothing) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    auto definition = sample("../escape");
    EXPECT_FALSE(store.save_definition(definition));
    definition = sample("ok");
    definition.cpu_quota_percent = 500; // more than 100 per vCPU
    EXPECT_FALSE(store.save_definition(definition));
    EXPECT_TRUE(MUST(store.list()).empty());
}

TEST(StateStore, SaveAgain_ReplacesDefinition) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    auto definition = sample("alpha");
    ASSERT_TRUE(store.save_definition(definition));
    definition.memory_size = 512ull << 20;
    ASSERT_TRUE(store.save_definition(definition));
    EXPECT_EQ(MUST(store.load_definition("alpha")).memory_size, 512ull << 20);
}

TEST(StateStore, List_IsSortedAndIgnoresStrayFiles) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    ASSERT_TRUE(store.save_definition(sample("charlie")));
    ASSERT_TRUE(store.save_definition(sample("alpha")));
    ASSERT_TRUE(store.save_definition(sample("bravo")));
    std::ofstream(fs::path(directory.path()) / "definitions" / "delta.toml.tmp") << "half written";
    std::ofstream(fs::path(directory.path()) / "definitions" / "README") << "x";
    EXPECT_EQ(MUST(store.list()), (std::vector<std::string> { "alpha", "bravo", "charlie" }));
}

TEST(StateStore, RemoveDefinition_RemovesOnlyThatOne) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    ASSERT_TRUE(store.save_definition(sample("alpha")));
    ASSERT_TRUE(store.save_definition(sample("bravo")));
    ASSERT_TRUE(store.remove_definition("alpha"));
    EXPECT_EQ(MUST(store.list()), (std::vector<std::string> { "bravo" }));
    auto const again = store.remove_definition("alpha");
    ASSERT_FALSE(again);
    EXPECT_THAT(again.error().message(), HasSubstr("'alpha'"));
    auto const missing = store.load_definition("alpha");
    ASSERT_FALSE(missing);
    EXPECT_THAT(missing.error().message(), HasSubstr("no VM named 'alpha'"));
}

TEST(StateStore, LoadWithInvalidName_IsRejectedBeforeTouchingFiles) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto const store = MUST(StateStore::open(fs::path(directory.path())));
    EXPECT_FALSE(store.load_definition("../../etc/passwd"));
}

// A state directory written by an older kvmmd, whose definitions held device option strings:
// the file (as that kvmmd's to_toml() wrote it, sizes as the user gave them) loads into the
// typed definition, and saving it again keeps what it said.
TEST(StateStore, DefinitionFromAnOlderKvmmd_LoadsTypedAndSavesBackTheSame) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    {
        std::ofstream old(fs::path(directory.path()) / "definitions" / "old.toml");
        old << R"(name = "old"
vcpus = 2
memory = 256
kernel = "/boot/vmlinux"
cmdline = "console=ttyS0"
autostart = true
restart = "on-failure"
rng = true

[[disk]]
path = "/var/lib/root.img"
readonly = true
cache = "writethrough"
root = true
bw = "10M"

[[nic]]
tap = "tap0"
mac = "52:54:00:12:34:56"
tx_bw = 1000000

[vsock]
cid = 9
uds = "/run/old.vsock"
)";
    }
    auto const loaded = store.load_definition("old");
    ASSERT_TRUE(loaded) << loaded.error().message();
    ASSERT_EQ(loaded->disks.size(), 1u);
    EXPECT_EQ(loaded->disks[0].path, "/var/lib/root.img");
    EXPECT_EQ(loaded->disks[0].id, "disk0");
    EXPECT_TRUE(loaded->disks[0].read_only);
    EXPECT_TRUE(loaded->disks[0].is_root_device);
    EXPECT_EQ(loaded->disks[0].cache, DiskConfig::CacheMode::WriteThrough);
    EXPECT_EQ(loaded->disks[0].rate_limit.bandwidth->size, 10u << 20);
    ASSERT_EQ(loaded->nics.size(), 1u);
    EXPECT_EQ(loaded->nics[0].tap_name, "tap0");
    EXPECT_EQ(loaded->nics[0].tx_rate_limit.bandwidth->size, 1000000u);
    ASSERT_TRUE(loaded->vsock);
    EXPECT_EQ(loaded->vsock->guest_cid, 9u);
    ASSERT_TRUE(store.save_definition(*loaded));
    EXPECT_EQ(MUST(store.load_definition("old")), *loaded);
}

TEST(StateStore, DefinitionFileNamingAnotherVm_IsRejected) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    ASSERT_TRUE(store.save_definition(sample("alpha")));
    fs::rename(fs::path(directory.path()) / "definitions" / "alpha.toml",
               fs::path(directory.path()) / "definitions" / "beta.toml");
    auto const loaded = store.load_definition("beta");
    ASSERT_FALSE(loaded);
    EXPECT_THAT(loaded.error().message(), HasSubstr("'alpha'"));
}

TEST(StateStore, Paths_AreUnderTheRoot) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto const store = MUST(StateStore::open(fs::path(directory.path())));
    EXPECT_EQ(store.log_path("vm1"), fs::path(directory.path()) / "logs" / "vm1.log");
    auto const runtime = store.runtime_dir("vm1");
    EXPECT_EQ(runtime, fs::path(directory.path()) / "runtime" / "vm1");
    EXPECT_TRUE(fs::is_directory(runtime));
    EXPECT_EQ(mode_of(runtime), 0700u);
}

TEST(StateStore, RuntimeRecord_RoundTripsAndClears) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    EXPECT_FALSE(MUST(store.read_runtime_record("vm1")).has_value());
    RuntimeRecord const record { 4242, 987654321, "/run/a.sock", "/run/c.sock", "paused" };
    ASSERT_TRUE(store.write_runtime_record("vm1", record));
    auto const loaded = store.read_runtime_record("vm1");
    ASSERT_TRUE(loaded) << loaded.error().message();
    ASSERT_TRUE(loaded->has_value());
    EXPECT_EQ(**loaded, record);
    ASSERT_TRUE(store.clear_runtime_record("vm1"));
    EXPECT_FALSE(MUST(store.read_runtime_record("vm1")).has_value());
    EXPECT_TRUE(store.clear_runtime_record("vm1")); // clearing nothing is fine
}

TEST(StateStore, StartIntent_IsWrittenAndCleared) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    EXPECT_FALSE(store.has_start_intent("vm1"));
    ASSERT_TRUE(store.write_start_intent("vm1", 1234));
    EXPECT_TRUE(store.has_start_intent("vm1"));
    EXPECT_FALSE(store.has_start_intent("vm2"));
    EXPECT_THAT(read_text(fs::path(directory.path()) / "runtime" / "vm1" / "intent.json"), HasSubstr("1234"));
    EXPECT_EQ(mode_of(fs::path(directory.path()) / "runtime" / "vm1" / "intent.json"), 0600u);
    ASSERT_TRUE(store.clear_start_intent("vm1"));
    EXPECT_FALSE(store.has_start_intent("vm1"));
    EXPECT_TRUE(store.clear_start_intent("vm1")); // clearing nothing is fine
}

TEST(StateStore, InterruptedWrites_TemporaryFilesAreRemovedAndTheRestKept) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    auto const runtime = store.runtime_dir("vm1");
    ASSERT_TRUE(store.write_runtime_record("vm1", RuntimeRecord { 7, 8, "/a", "/c", "running" }));
    std::ofstream(runtime / "runtime.json.tmp") << "{\"pid\": 9";
    std::ofstream(runtime / "intent.json.tmp") << "";
    store.remove_temporary_files("vm1");
    EXPECT_FALSE(fs::exists(runtime / "runtime.json.tmp"));
    EXPECT_FALSE(fs::exists(runtime / "intent.json.tmp"));
    EXPECT_TRUE(MUST(store.read_runtime_record("vm1")).has_value());
}

TEST(StateStore, ClearRuntimeDir_RemovesRecordIntentAndSockets) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto store = MUST(StateStore::open(fs::path(directory.path())));
    auto const runtime = store.runtime_dir("vm1");
    ASSERT_TRUE(store.write_runtime_record("vm1", RuntimeRecord { 7, 8, "/a", "/c", "running" }));
    ASSERT_TRUE(store.write_start_intent("vm1", 1));
    std::ofstream(runtime / "control.sock") << "";
    std::ofstream(runtime / "runtime.json.tmp") << "";
    ASSERT_TRUE(store.clear_runtime_dir("vm1"));
    EXPECT_TRUE(fs::is_empty(runtime));
    EXPECT_TRUE(store.clear_runtime_dir("never-started"));
}

TEST(StateStore, CorruptRuntimeRecord_IsAnError) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto const store = MUST(StateStore::open(fs::path(directory.path())));
    std::ofstream(store.runtime_dir("vm1") / "runtime.json") << "{\"pid\": \"x\"";
    EXPECT_FALSE(store.read_runtime_record("vm1"));
}

TEST(RuntimeRecordJson, MissingOrMistypedFields_NameTheField) {
    auto const missing =
        runtime_record_from_json(R"({"pid": 5, "start_time": 1, "api_socket": "a", "state": "running"})");
    ASSERT_FALSE(missing);
    EXPECT_THAT(missing.error().message(), HasSubstr("console_socket"));
    auto const negative = runtime_record_from_json(
        R"({"pid": -5, "start_time": 1, "api_socket": "a", "console_socket": "c", "state": "r"})");
    ASSERT_FALSE(negative);
    EXPECT_THAT(negative.error().message(), HasSubstr("'pid' = -5"));
    EXPECT_FALSE(runtime_record_from_json("[1, 2]"));
}

TEST(AtomicWriteFile, ReplacesContentsWithGivenMode) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto const path = fs::path(directory.path()) / "file";
    ASSERT_TRUE(atomic_write_file(path, "first", 0644));
    ASSERT_TRUE(atomic_write_file(path, "second", 0600));
    EXPECT_EQ(read_text(path), "second");
    EXPECT_EQ(mode_of(path), 0600u);
    EXPECT_FALSE(fs::exists(fs::path(directory.path()) / "file.tmp"));
}

TEST(AtomicWriteFile, MissingDirectory_NamesPath) {
    testing::TemporaryDirectory directory { "kvmm-state" };
    auto const result = atomic_write_file(fs::path(directory.path()) / "no" / "file", "x", 0600);
    ASSERT_FALSE(result);
    EXPECT_THAT(result.error().message(), HasSubstr("file.tmp"));
}

TEST(ProcessStartTime, OwnProcess_MatchesProcStat) {
    auto const start_time = process_start_time(::getpid());
    ASSERT_TRUE(start_time);
    // Field 22 independently: everything after the last ')' split on spaces, field 3 first.
    auto const stat = read_text("/proc/self/stat");
    std::istringstream rest(stat.substr(stat.rfind(')') + 1));
    std::string field;
    for (int index = 3; index <= 22; ++index)
        rest >> field;
    EXPECT_EQ(*start_time, std::stoull(field));
}

TEST(ProcessStartTime, ExitedChild_HasNoStartTime) {
    pid_t const child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0)
        ::_exit(0);
    ASSERT_TRUE(process_start_time(child)); // a zombie still has its /proc entry
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_FALSE(process_start_time(child));
    EXPECT_FALSE(process_start_time(0));
}

TEST(IsSameProcess, DifferentStartTime_IsAnotherProcess) {
    RuntimeRecord record;
    record.pid = ::getpid();
    record.start_time = *process_start_time(::getpid());
    EXPECT_TRUE(is_same_process(record));
    record.start_time += 1; // as if the pid had been reused by a later process
    EXPECT_FALSE(is_same_process(record));
}

} // namespace
} // namespace kvmm

// KVM tier: Firecracker's snapshot API on the real kvmm with the test guest's counter scenario
// (it counts, prints "counter N clock_ns T" every 20 ms and checks a 1 MiB memory pattern it
// keeps writing). A snapshot of the paused guest is taken, that kvmm is killed, and fresh kvmm
// processes load the snapshot: each clone goes on from the saved counter with its memory intact
// and its kvmclock continuing from the saved time. Bad input (load after configuration, create
// while running, damaged or short files) is a 400 naming the problem that leaves kvmm usable.
#include "child_process.h"
#include "kvmm_process.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <thread>

namespace kvmm::testing {
namespace {

using namespace std::chrono_literals;

struct CounterLine {
    uint64_t counter { 0 };
    uint64_t clock_ns { 0 };
};

// Every "kvmm-test: counter N clock_ns T" line of a console output, in order.
std::vector<CounterLine> counter_lines(std::string const& output) {
    static std::regex const line(R"(kvmm-test: counter (\d+) clock_ns (\d+)\n)");
    std::vector<CounterLine> lines;
    for (auto match = std::sregex_iterator(output.begin(), output.end(), line); match != std::sregex_iterator();
         ++match)
        lines.push_back(CounterLine { std::stoull((*match)[1]), std::stoull((*match)[2]) });
    return lines;
}

class SnapshotTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto const reason = kvm_unavailable_reason();
        if (!reason.empty())
            GTEST_SKIP() << "KVM tier skipped: " << reason;
        char pattern[] = "/tmp/kvmm-snapshot-test-XXXXXX";
        m_directory = ::mkdtemp(pattern);
    }
    void TearDown() override {
        if (!m_directory.empty())
            std::filesystem::remove_all(m_directory);
    }

    // A kvmm with its API socket, console and log in its own subdirectory.
    struct Instance {
        std::filesystem::path directory;
        std::string socket;
        std::unique_ptr<KvmmProcess> process;
    };
    Instance start_kvmm(std::string const& name) {
        Instance instance;
        instance.directory = m_directory / name;
        std::filesystem::create_directories(instance.directory);
        instance.socket = (instance.directory / "api.sock").string();
        instance.process = std::make_unique<KvmmProcess>(std::vector<std::string> { kvmm_binary(), "--api-sock",
                                                                                    instance.socket, "--id", name },
                                                         instance.directory);
        EXPECT_TRUE(eventually([&] { return http(instance.socket, "GET", "/").status == 200; }))
            << instance.process->log();
        return instance;
    }
    // Boots the counter guest with `memory_mib` of RAM and waits for its fifth tick.
    // `machine_fields` are added to machine-config, `boot_args` to "test=counter".
    Instance boot_counter_guest(uint64_t memory_mib, std::string const& machine_fields = "",
                                std::string const& boot_args = "") {
        auto instance = start_kvmm("original");
        auto const& socket = instance.socket;
        EXPECT_EQ(http(socket, "PUT", "/machine-config",
                       R"({"vcpu_count": 1, "mem_size_mib": )" + std::to_string(memory_mib) + machine_fields + "}")
                      .status,
                  204);
        EXPECT_EQ(http(socket, "PUT", "/boot-source",
                       R"({"kernel_image_path": ")" + test_guest() + R"(", "boot_args": "test=counter)" + boot_args +
                           R"("})")
                      .status,
                  204);
        EXPECT_EQ(http(socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 204);
        EXPECT_TRUE(eventually([&] { return counter_lines(instance.process->output()).size() >= 5; }, 20s))
            << instance.process->output() << instance.process->log();
        return instance;
    }
    std::string snapshot_path() const { return (m_directory / "vm.snap").string(); }
    std::string memory_path() const { return (m_directory / "vm.mem").string(); }
    std::string load_body(bool resume) const {
        return R"({"snapshot_path": ")" + snapshot_path() +
               R"(", "mem_backend": {"backend_type": "File", "backend_path": ")" + memory_path() +
               R"("}, "resume_vm": )" + (resume ? "true" : "false") + "}";
    }
    // Pauses the guest, waits for its console to settle and snapshots it; returns its last
    // complete line. The guest may have been paused in the middle of a line: m_partial_line
    // keeps what it had printed of it, which a clone's output continues.
    CounterLine pause_and_snapshot(Instance& instance) {
        return pause_and_snapshot(instance, "Full", snapshot_path(), memory_path());
    }
    CounterLine pause_and_snapshot(Instance& instance, std::string const& type, std::string const& snapshot,
                                   std::string const& memory) {
        EXPECT_EQ(http(instance.socket, "PATCH", "/vm", R"({"state": "Paused"})").status, 204);
        std::this_thread::sleep_for(300ms); // the console buffer drains within its 250 ms
        auto const output = instance.process->output();
        m_partial_line = output.substr(output.rfind('\n') + 1);
        auto const lines = counter_lines(output);
        EXPECT_FALSE(lines.empty());
        auto const created = http(instance.socket, "PUT", "/snapshot/create",
                                  R"({"snapshot_type": ")" + type + R"(", "snapshot_path": ")" + snapshot +
                                      R"(", "mem_file_path": ")" + memory + R"("})",
                                  30s);
        EXPECT_EQ(created.status, 204) << created.body << instance.process->log();
        return lines.empty() ? CounterLine {} : lines.back();
    }

    // A clone's console output as the guest sees it: the line it was paused in, continued.
    std::string continued_output(Instance const& clone) const { return m_partial_line + clone.process->output(); }

    std::filesystem::path m_directory;
    std::string m_partial_line;
};

TEST_F(SnapshotTest, ClonesOfOneSnapshotEachContinueFromTheSavedCounterWithMemoryAndClockIntact) {
    auto original = boot_counter_guest(64);
    auto const refused =
        http(original.socket, "PUT", "/snapshot/create",
             R"({"snapshot_path": ")" + snapshot_path() + R"(", "mem_file_path": ")" + memory_path() + R"("})");
    EXPECT_EQ(refused.status, 400);
    EXPECT_NE(refused.body.find("must be paused"), std::string::npos) << refused.body;
    EXPECT_FALSE(std::filesystem::exists(snapshot_path()));

    auto const saved = pause_and_snapshot(original);
    auto const snapshot_taken = std::chrono::steady_clock::now();
    EXPECT_EQ(std::filesystem::file_size(memory_path()), 64u << 20);
    for (auto const& entry : std::filesystem::directory_iterator(m_directory))
        EXPECT_EQ(entry.path().filename().string().find(".partial"), std::string::npos) << entry.path();
    // The original is gone for good: the clones need nothing of it.
    original.process.reset();

    for (int clone = 0; clone < 3; ++clone) {
        SCOPED_TRACE("clone " + std::to_string(clone));
        auto instance = start_kvmm("clone" + std::to_string(clone));
        if (clone == 2) // at least 2 s of host time after the snapshot, which the guest must not see
            std::this_thread::sleep_until(snapshot_taken + 2s);
        auto const loaded = http(instance.socket, "PUT", "/snapshot/load", load_body(true), 30s);
        ASSERT_EQ(loaded.status, 204) << loaded.body << instance.process->log();
        EXPECT_NE(http(instance.socket, "GET", "/").body.find("\"Running\""), std::string::npos);
        ASSERT_TRUE(eventually([&] { return counter_lines(instance.process->output()).size() >= 10; }, 20s))
            << instance.process->output() << instance.process->log();
        auto const output = continued_output(instance);
        EXPECT_EQ(output.find("FAIL"), std::string::npos) << output;
        auto const lines = counter_lines(output);
        EXPECT_EQ(lines.front().counter, saved.counter + 1) << output;
        for (size_t i = 1; i < lines.size(); ++i)
            EXPECT_EQ(lines[i].counter, lines[i - 1].counter + 1);
        // kvmclock goes on from the saved time: never backwards, and not by the host time that
        // passed while the snapshot lay on disk (the guest was paused for ~0.3 s before it).
        EXPECT_GE(lines.front().clock_ns, saved.clock_ns);
        EXPECT_LT(lines.front().clock_ns - saved.clock_ns, 1'500'000'000u)
            << "first tick " << lines.front().clock_ns << " ns, saved " << saved.clock_ns << " ns";
        // The configuration came from the snapshot file.
        auto const config = http(instance.socket, "GET", "/vm/config").body;
        EXPECT_NE(config.find("\"mem_size_mib\":64"), std::string::npos) << config;
    }
}

TEST_F(SnapshotTest, ALoadedPausedCloneRunsOnlyOnceResumed) {
    auto original = boot_counter_guest(64);
    auto const saved = pause_and_snapshot(original);
    original.process.reset();
    auto clone = start_kvmm("clone");
    ASSERT_EQ(http(clone.socket, "PUT", "/snapshot/load", load_body(false), 30s).status, 204) << clone.process->log();
    EXPECT_NE(http(clone.socket, "GET", "/").body.find("\"Paused\""), std::string::npos);
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(counter_lines(clone.process->output()).empty()) << clone.process->output();
    ASSERT_EQ(http(clone.socket, "PATCH", "/vm", R"({"state": "Resumed"})").status, 204);
    ASSERT_TRUE(eventually([&] { return !counter_lines(clone.process->output()).empty(); }, 10s))
        << clone.process->log();
    EXPECT_EQ(counter_lines(continued_output(clone)).front().counter, saved.counter + 1)
        << "partial [" << m_partial_line << "] clone [" << clone.process->output() << "]";
}

TEST_F(SnapshotTest, BadLoadsAreRefusedNamingTheProblemAndLeaveKvmmUsable) {
    auto original = boot_counter_guest(64);
    pause_and_snapshot(original);
    original.process.reset();

    auto configured = start_kvmm("configured");
    ASSERT_EQ(http(configured.socket, "PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 64})").status,
              204);
    auto const after_configuration = http(configured.socket, "PUT", "/snapshot/load", load_body(true));
    EXPECT_EQ(after_configuration.status, 400);
    EXPECT_NE(after_configuration.body.find("not allowed after configuring boot-specific resources"), std::string::npos)
        << after_configuration.body;

    auto instance = start_kvmm("loader");
    auto const good_snapshot = std::filesystem::path(snapshot_path());
    auto const copy = m_directory / "good.snap";
    std::filesystem::copy_file(good_snapshot, copy);
    auto expect_refused = [&](std::string const& fragment) {
        auto const answer = http(instance.socket, "PUT", "/snapshot/load", load_body(true), 30s);
        EXPECT_EQ(answer.status, 400) << answer.body;
        EXPECT_NE(answer.body.find(fragment), std::string::npos) << answer.body;
        EXPECT_NE(http(instance.socket, "GET", "/").body.find("Not started"), std::string::npos);
    };
    std::filesystem::resize_file(good_snapshot, std::filesystem::file_size(copy) / 2);
    expect_refused("vm.snap");
    std::filesystem::copy_file(copy, good_snapshot, std::filesystem::copy_options::overwrite_existing);
    {
        std::fstream file(good_snapshot, std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(100);
        file.put('\x5a');
    }
    expect_refused("checksum");
    std::filesystem::copy_file(copy, good_snapshot, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::resize_file(memory_path(), (64u << 20) - 4096);
    expect_refused("too short");
    std::filesystem::resize_file(memory_path(), 64u << 20);
    // The same kvmm loads the snapshot once the files are right.
    auto const loaded = http(instance.socket, "PUT", "/snapshot/load", load_body(true), 30s);
    EXPECT_EQ(loaded.status, 204) << loaded.body << instance.process->log();
}

// More bad files, each a 400 naming the problem on a kvmm that stays able to load: a snapshot
// file of another format version, a file that is not a kvmm state file at all (the memory file
// given as the snapshot), and a memory file longer than the snapshot's guest memory.
TEST_F(SnapshotTest, WrongVersionForeignAndOverlongFilesAreRefusedNamingTheProblem) {
    auto original = boot_counter_guest(64);
    pause_and_snapshot(original);
    original.process.reset();
    auto instance = start_kvmm("loader");
    auto expect_refused = [&](std::string const& body, std::string const& fragment) {
        auto const answer = http(instance.socket, "PUT", "/snapshot/load", body, 30s);
        EXPECT_EQ(answer.status, 400) << answer.body;
        EXPECT_NE(answer.body.find(fragment), std::string::npos) << answer.body;
        EXPECT_NE(http(instance.socket, "GET", "/").body.find("Not started"), std::string::npos);
    };
    auto const good = m_directory / "good.snap";
    std::filesystem::copy_file(snapshot_path(), good);
    {
        // The container's format version follows its 8-byte magic.
        std::fstream file(snapshot_path(), std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(8);
        char const newer[4] = { 99, 0, 0, 0 };
        file.write(newer, 4);
    }
    expect_refused(load_body(true), "format version 99");
    std::filesystem::copy_file(good, snapshot_path(), std::filesystem::copy_options::overwrite_existing);

    auto const foreign = R"({"snapshot_path": ")" + memory_path() +
                         R"(", "mem_backend": {"backend_type": "File", "backend_path": ")" + memory_path() + R"("}})";
    expect_refused(foreign, "not a kvmm state file");

    std::filesystem::resize_file(memory_path(), (64u << 20) + 4096);
    expect_refused(load_body(true), "longer than the snapshot's guest memory");
    std::filesystem::resize_file(memory_path(), 64u << 20);
    auto const loaded = http(instance.socket, "PUT", "/snapshot/load", load_body(true), 30s);
    EXPECT_EQ(loaded.status, 204) << loaded.body << instance.process->log();
}

// kvmmd's form (--config-file machine file, --control-sock, --restore-snapshot): a snapshot of
// another machine than the file describes exits 1 naming the difference, before any vCPU runs.
TEST_F(SnapshotTest, RestoringASnapshotIntoAnotherMachineExitsOneNamingTheDifference) {
    auto original = boot_counter_guest(64);
    pause_and_snapshot(original);
    original.process.reset();
    auto const machine_file = (m_directory / "machine.json").string();
    auto run = [&](int vcpus, int memory_mib) {
        std::ofstream(machine_file) << R"({"boot-source": {"kernel_image_path": ")" << test_guest()
                                    << R"(", "boot_args": "test=counter"}, "machine-config": {"vcpu_count": )" << vcpus
                                    << R"(, "mem_size_mib": )" << memory_mib << "}}";
        return run_process({ kvmm_binary(), "--config-file", machine_file, "--control-sock",
                             (m_directory / "control.sock").string(), "--console", "none", "--restore-snapshot",
                             snapshot_path(), "--restore-memory", memory_path() },
                           {}, 30s);
    };
    auto const more_vcpus = run(2, 64);
    EXPECT_EQ(more_vcpus.exit_status, 1);
    EXPECT_NE(more_vcpus.standard_error.find("vcpu_count 1 is not this machine's 2"), std::string::npos)
        << more_vcpus.standard_error;
    auto const more_memory = run(1, 128);
    EXPECT_EQ(more_memory.exit_status, 1);
    EXPECT_NE(more_memory.standard_error.find("memory layout"), std::string::npos) << more_memory.standard_error;
    auto const alone = run_process({ kvmm_binary(), "--api-sock", (m_directory / "api.sock").string(),
                                     "--restore-snapshot", snapshot_path(), "--restore-memory", memory_path() });
    EXPECT_EQ(alone.exit_status, 1);
    EXPECT_NE(alone.standard_error.find("PUT /snapshot/load"), std::string::npos) << alone.standard_error;
}

// The File backend maps the memory file privately: a 1 GiB guest restores without reading its
// memory, so right after the load kvmm holds little more than what the guest touched.
TEST_F(SnapshotTest, ARestoredOneGibGuestStartsSmall) {
    auto original = boot_counter_guest(1024);
    pause_and_snapshot(original);
    original.process.reset();
    EXPECT_EQ(std::filesystem::file_size(memory_path()), 1024ull << 20);
    auto clone = start_kvmm("clone");
    ASSERT_EQ(http(clone.socket, "PUT", "/snapshot/load", load_body(true), 30s).status, 204) << clone.process->log();
    ASSERT_TRUE(eventually([&] { return counter_lines(clone.process->output()).size() >= 3; }, 10s));
    auto const rss_kib = clone.process->peak_rss_kib();
    EXPECT_GT(rss_kib, 0u);
    EXPECT_LT(rss_kib, 96u * 1024) << "peak RSS of a restored 1 GiB guest: " << rss_kib << " KiB";
    RecordProperty("restored_1gib_peak_rss_kib", std::to_string(rss_kib));
}

// Diff snapshots: a guest with dirty page tracking is snapshotted Full, then twice Diff while
// it keeps writing its pattern (every 2 ms, so it revisits all 256 pattern pages within about
// half a second). The diffs are small sparse files; applied onto the Full memory file in order
// (kvmm snapshot-rebase), they give the memory of the last one, with whose state file a fresh
// kvmm goes on from its counter and finds every pattern page as it left it.
TEST_F(SnapshotTest, ADiffChainAppliedOntoItsFullSnapshotContinuesWithMemoryIntact) {
    auto original = boot_counter_guest(64, R"(, "track_dirty_pages": true)", " period_us=2000");
    auto const full_snapshot = (m_directory / "full.snap").string();
    auto const full_memory = (m_directory / "full.mem").string();
    pause_and_snapshot(original, "Full", full_snapshot, full_memory);
    std::vector<std::string> diff_snapshots, diff_memories;
    CounterLine saved;
    for (int diff = 1; diff <= 2; ++diff) {
        auto const ticks = counter_lines(original.process->output()).size();
        ASSERT_EQ(http(original.socket, "PATCH", "/vm", R"({"state": "Resumed"})").status, 204);
        // More than a round of the pattern between snapshots: every pattern page changes.
        ASSERT_TRUE(eventually([&] { return counter_lines(original.process->output()).size() >= ticks + 300; }, 20s))
            << original.process->log();
        diff_snapshots.push_back((m_directory / fmt::format("diff{}.snap", diff)).string());
        diff_memories.push_back((m_directory / fmt::format("diff{}.mem", diff)).string());
        saved = pause_and_snapshot(original, "Diff", diff_snapshots.back(), diff_memories.back());
        // Full length, but only the pages written since the snapshot before hold data.
        EXPECT_EQ(std::filesystem::file_size(diff_memories.back()), 64u << 20);
        struct stat status {};
        ASSERT_EQ(::stat(diff_memories.back().c_str(), &status), 0);
        auto const stored = static_cast<uint64_t>(status.st_blocks) * 512;
        EXPECT_LT(stored, 4u << 20) << "diff " << diff << " stores " << stored << " bytes";
        RecordProperty(fmt::format("diff{}_stored_bytes", diff), std::to_string(stored));
    }
    auto const output_before = original.process->output();
    EXPECT_EQ(output_before.find("FAIL"), std::string::npos) << output_before;
    original.process.reset();

    auto const rebased = run_process({ kvmm_binary(), "snapshot-rebase", "--base-memory", full_memory, "--diff-memory",
                                       diff_memories[0], "--diff-memory", diff_memories[1] });
    ASSERT_EQ(rebased.exit_status, 0) << rebased.standard_error;

    auto clone = start_kvmm("clone");
    auto const loaded = http(clone.socket, "PUT", "/snapshot/load",
                             R"({"snapshot_path": ")" + diff_snapshots[1] +
                                 R"(", "mem_backend": {"backend_type": "File", "backend_path": ")" + full_memory +
                                 R"("}, "resume_vm": true})",
                             30s);
    ASSERT_EQ(loaded.status, 204) << loaded.body << clone.process->log();
    // Two rounds of the pattern: every page the diffs carried is checked.
    ASSERT_TRUE(eventually([&] { return counter_lines(clone.process->output()).size() >= 600; }, 30s))
        << clone.process->output() << clone.process->log();
    auto const output = continued_output(clone);
    EXPECT_EQ(output.find("FAIL"), std::string::npos) << output.substr(0, 4000);
    auto const lines = counter_lines(output);
    EXPECT_EQ(lines.front().counter, saved.counter + 1);
    for (size_t i = 1; i < lines.size(); ++i)
        ASSERT_EQ(lines[i].counter, lines[i - 1].counter + 1);
}

// Firecracker's rule: a Diff needs dirty page tracking; without it the request is a 400 that
// writes nothing and leaves the VM as it was. A rebase onto a memory file of another length,
// or with a diff that does not exist, exits 1 naming the problem and leaves the base alone.
TEST_F(SnapshotTest, ADiffSnapshotNeedsTrackingAndARebaseOfAnotherSizeIsRefused) {
    auto original = boot_counter_guest(64);
    ASSERT_EQ(http(original.socket, "PATCH", "/vm", R"({"state": "Paused"})").status, 204);
    auto const refused = http(original.socket, "PUT", "/snapshot/create",
                              R"({"snapshot_type": "Diff", "snapshot_path": ")" + snapshot_path() +
                                  R"(", "mem_file_path": ")" + memory_path() + R"("})");
    EXPECT_EQ(refused.status, 400);
    EXPECT_NE(refused.body.find("dirty page tracking"), std::string::npos) << refused.body;
    EXPECT_FALSE(std::filesystem::exists(snapshot_path()));
    EXPECT_FALSE(std::filesystem::exists(memory_path()));
    // The VM is untouched: a Full snapshot still works and the guest resumes.
    pause_and_snapshot(original);
    auto const ticks = counter_lines(original.process->output()).size();
    ASSERT_EQ(http(original.socket, "PATCH", "/vm", R"({"state": "Resumed"})").status, 204);
    EXPECT_TRUE(eventually([&] { return counter_lines(original.process->output()).size() > ticks; }));

    auto const other = (m_directory / "other.mem").string();
    std::filesystem::copy_file(memory_path(), other);
    std::filesystem::resize_file(other, 32u << 20);
    auto const before = std::filesystem::last_write_time(memory_path());
    auto const rebased =
        run_process({ kvmm_binary(), "snapshot-rebase", "--base-memory", memory_path(), "--diff-memory", other });
    EXPECT_EQ(rebased.exit_status, 1);
    EXPECT_NE(rebased.standard_error.find("same machine"), std::string::npos) << rebased.standard_error;
    EXPECT_EQ(std::filesystem::last_write_time(memory_path()), before);
    auto const missing = run_process({ kvmm_binary(), "snapshot-rebase", "--base-memory", memory_path(),
                                       "--diff-memory", (m_directory / "none.mem").string() });
    EXPECT_EQ(missing.exit_status, 1);
    EXPECT_NE(missing.standard_error.find("none.mem"), std::string::npos) << missing.standard_error;
}

} // namespace
} // namespace kvmm::testing

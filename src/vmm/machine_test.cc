// A whole Machine - builder phases, devices, boot loader, vCPU threads, event loop - on the
// fake hypervisor: the vCPUs replay scripted exits instead of running guest code.
#include "vmm/machine.h"

#include "arch/x86_64/layout.h"
#include "arch/x86_64/testing/kernel_images.h"
#include "base/testing/temporary_directory.h"
#include "base/thread_annotations.h"
#include "devices/legacy/power_control.h"
#include "hypervisor/fake/fake_hypervisor.h"
#include "vmm/host_capacity.h"
#include "vmm/snapshot_file.h"

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace kvmm {
namespace {

using namespace std::chrono_literals;

constexpr uint16_t COM1 = 0x3f8;
constexpr uint8_t POWER_OFF = (POWER_OFF_SLEEP_TYPE << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE_BIT;

ScriptedExit out(uint16_t port, uint8_t value) { return ScriptedExit { ScriptedExit::Kind::IoOut, port, { value } }; }
ScriptedExit wait_for_kick() { return ScriptedExit { ScriptedExit::Kind::WaitForKick }; }

class MachineTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto const kernel = x86_64::testing::make_pvh_elf();
        std::ofstream(m_directory / "vmlinux", std::ios::binary)
            .write(reinterpret_cast<char const*>(kernel.data()), static_cast<std::streamsize>(kernel.size()));
        m_config.kernel_path = m_directory / "vmlinux";
        m_config.cmdline = "console=ttyS0";
        m_config.memory_size = 64 << 20;
        m_config.console = ConsoleConfig { ConsoleConfig::Kind::File, m_directory / "console.log" };
        m_config.rng = RngConfig {};
    }
    std::string console_text() const {
        std::ifstream file(m_directory / "console.log");
        std::stringstream text;
        text << file.rdbuf();
        return text.str();
    }
    // Runs the machine on its own thread (it becomes that thread's event loop).
    std::future<StopReason> run(Machine& machine) {
        return std::async(std::launch::async, [&machine] { return machine.run(); });
    }

    testing::TemporaryDirectory m_directory { "kvmm-machine-test" };
    VmConfig m_config;
    FakeHypervisor m_hypervisor;
};

TEST_F(MachineTest, MoreVcpusThanHostCpusIsBuiltWithAWarningInTheLog) {
    m_config.vcpu_count = read_host_capacity().cpus + 1;
    std::ostringstream log;
    auto const previous = spdlog::default_logger();
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("captured", std::make_shared<spdlog::sinks::ostream_sink_st>(log)));
    auto machine = Machine::create(m_config, m_hypervisor);
    spdlog::set_default_logger(previous);
    ASSERT_TRUE(machine) << machine.error().message();
    EXPECT_NE(log.str().find(fmt::format("{} vCPUs are more than the", m_config.vcpu_count)), std::string::npos)
        << log.str();
}

TEST_F(MachineTest, BootsAPvhKernelAndStopsWhenTheGuestPowersOff) {
    m_hypervisor.add_vcpu_script(0, { out(COM1, 'h'), out(COM1, 'i'), out(POWER_CONTROL_PORT, POWER_OFF) });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));

    // The boot vCPU starts at the PVH entry with the start info in EBX (PVH boot ABI).
    auto* vm = m_hypervisor.last_vm();
    ASSERT_NE(vm, nullptr);
    auto const registers = MUST(vm->vcpu(0)->registers());
    EXPECT_EQ(registers.rip, 0x200010u);
    EXPECT_EQ(registers.rbx, x86_64::PVH_START_INFO_ADDRESS);
    EXPECT_FALSE(vm->vcpu(0)->cpuid().empty()) << "CPUID set in the boot phase";
    EXPECT_TRUE(vm->has_irqchip());

    // Every device is in the registry; the entropy device got the first virtio window and the
    // first line the ISA devices left free, with an ioeventfd for its queue.
    std::vector<std::string> ids;
    for (auto const& entry : machine->devices())
        ids.push_back(entry.id);
    EXPECT_EQ(ids, (std::vector<std::string> { "com1", "i8042", "rtc", "power", "boot-marker", "pvpanic", "rng" }));
    auto const& rng = machine->devices().back();
    EXPECT_EQ(std::get<MmioWindow>(rng.attachment).base, x86_64::VIRTIO_MMIO_BASE);
    EXPECT_EQ(rng.gsi, 5u);
    ASSERT_EQ(vm->ioeventfds().size(), 1u);

    auto const reason = run(*machine).get();
    EXPECT_EQ(reason.cause, StopReason::Cause::PowerOff) << reason.detail;
    EXPECT_EQ(console_text(), "hi");
}

TEST_F(MachineTest, PauseHoldsTheVcpusAndResumeLetsTheGuestFinish) {
    m_hypervisor.add_vcpu_script(0, { out(COM1, 'a'), wait_for_kick(), out(COM1, 'b'),
                                      out(POWER_CONTROL_PORT, POWER_OFF) });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    auto stopped = run(*machine);
    // Pause once the guest has made its first write: it then waits for the VMM to act.
    auto const deadline = std::chrono::steady_clock::now() + 10s;
    while (MUST(machine->metrics()).vcpus.at(0).io == 0) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the guest never wrote";
        std::this_thread::sleep_for(1ms);
    }

    ASSERT_TRUE(machine->pause());
    EXPECT_TRUE(machine->paused());
    auto const metrics = MUST(machine->metrics());
    ASSERT_EQ(metrics.vcpus.size(), 1u);
    EXPECT_EQ(metrics.vcpus[0].io, 1u) << "the guest is held after its first write";
    ASSERT_FALSE(metrics.devices.empty());
    EXPECT_EQ(metrics.devices[0].name, "rng");
    EXPECT_EQ(stopped.wait_for(100ms), std::future_status::timeout) << "a paused guest does not go on";

    ASSERT_TRUE(machine->resume());
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(stopped.get().cause, StopReason::Cause::PowerOff);
    EXPECT_EQ(console_text(), "ab");
    auto late = machine->pause();
    ASSERT_FALSE(late);
    EXPECT_EQ(late.error().message(), "the VM has stopped");
}

TEST_F(MachineTest, AStopRequestEndsAGuestThatIsWaiting) {
    m_hypervisor.add_vcpu_script(0, { wait_for_kick(), wait_for_kick() });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    auto stopped = run(*machine);
    machine->request_stop(StopReason { StopReason::Cause::HostSignal, "test", 15 });
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(stopped.get().cause, StopReason::Cause::HostSignal);
}

TEST_F(MachineTest, TheSandboxIsEnteredWithEveryHostResourceOpenAndNothingAttached) {
    bool entered = false;
    MachineHooks hooks;
    hooks.enter_sandbox = [&]() -> Expected<void> {
        entered = true;
        auto* vm = m_hypervisor.last_vm();
        EXPECT_NE(vm->vcpu(0), nullptr) << "vCPUs are host resources: created before";
        EXPECT_TRUE(std::filesystem::exists(m_directory / "console.log")) << "the console file is open";
        EXPECT_TRUE(vm->ioeventfds().empty()) << "no device is attached yet";
        EXPECT_TRUE(vm->irqfds().empty());
        EXPECT_TRUE(vm->vcpu(0)->cpuid().empty()) << "no boot state yet";
        return {};
    };
    auto machine = Machine::create(m_config, m_hypervisor, hooks);
    ASSERT_TRUE(machine) << machine.error().message();
    EXPECT_TRUE(entered);
}

TEST_F(MachineTest, AFailingSandboxStopsTheBuild) {
    MachineHooks hooks;
    hooks.enter_sandbox = []() -> Expected<void> { return Error("no seccomp here"); };
    auto machine = Machine::create(m_config, m_hypervisor, hooks);
    ASSERT_FALSE(machine);
    EXPECT_EQ(machine.error().message(), "entering the sandbox: no seccomp here");
}

TEST_F(MachineTest, EachVcpuThreadAndThenTheEventLoopEnterTheirSandboxOnTheirOwnThreads) {
    m_config.vcpu_count = 2;
    m_hypervisor.add_vcpu_script(0, { wait_for_kick() });
    m_hypervisor.add_vcpu_script(1, { wait_for_kick() });
    Mutex lock;
    std::vector<std::string> entered;
    std::thread::id loop_thread;
    MachineHooks hooks;
    hooks.enter_vcpu_thread = [&](uint32_t index) -> Expected<void> {
        MutexLock guard(lock);
        entered.push_back(fmt::format("vcpu{}", index));
        return {};
    };
    hooks.enter_event_loop = [&]() -> Expected<void> {
        MutexLock guard(lock);
        entered.push_back("loop");
        loop_thread = std::this_thread::get_id();
        return {};
    };
    auto machine = MUST(Machine::create(m_config, m_hypervisor, hooks));
    auto stopped = run(*machine);
    machine->request_stop(StopReason { StopReason::Cause::HostSignal, "test", 15 });
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(stopped.get().cause, StopReason::Cause::HostSignal);
    MutexLock guard(lock);
    std::sort(entered.begin(), entered.end());
    EXPECT_EQ(entered, (std::vector<std::string> { "loop", "vcpu0", "vcpu1" }));
    EXPECT_NE(loop_thread, std::this_thread::get_id()) << "the thread that runs the machine";
}

TEST_F(MachineTest, AVcpuThreadThatCannotEnterItsSandboxStopsTheMachineAsAVmmFailure) {
    m_hypervisor.add_vcpu_script(0, { wait_for_kick() });
    MachineHooks hooks;
    hooks.enter_vcpu_thread = [](uint32_t) -> Expected<void> { return Error("filter refused"); };
    auto machine = MUST(Machine::create(m_config, m_hypervisor, hooks));
    auto stopped = run(*machine);
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
    auto const reason = stopped.get();
    EXPECT_EQ(reason.cause, StopReason::Cause::VmmFailure);
    EXPECT_EQ(reason.detail, "filter refused");
}

TEST_F(MachineTest, AnEventLoopThatCannotEnterItsSandboxStopsTheMachineAsAVmmFailure) {
    m_hypervisor.add_vcpu_script(0, { wait_for_kick() });
    MachineHooks hooks;
    hooks.enter_event_loop = []() -> Expected<void> { return Error("filter refused"); };
    auto machine = MUST(Machine::create(m_config, m_hypervisor, hooks));
    auto stopped = run(*machine);
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
    auto const reason = stopped.get();
    EXPECT_EQ(reason.cause, StopReason::Cause::VmmFailure);
    EXPECT_EQ(reason.detail, "entering the event loop's sandbox: filter refused");
}

TEST_F(MachineTest, BadInputIsRefusedBeforeTheHypervisorIsAsked) {
    m_config.vcpu_count = 0;
    EXPECT_FALSE(Machine::create(m_config, m_hypervisor));
    m_config.vcpu_count = 1;
    m_config.kernel_path = m_directory / "missing";
    auto missing = Machine::create(m_config, m_hypervisor);
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find("kernel"), std::string::npos) << missing.error().message();
    EXPECT_EQ(m_hypervisor.last_vm(), nullptr) << "no VM was made for a configuration that cannot work";
}

TEST_F(MachineTest, AHypervisorFailureIsReportedAsIs) {
    m_hypervisor.fail_next_create_vm(Error("/dev/kvm: No such file or directory"));
    auto machine = Machine::create(m_config, m_hypervisor);
    ASSERT_FALSE(machine);
    EXPECT_EQ(machine.error().message(), "/dev/kvm: No such file or directory");
}

TEST_F(MachineTest, TooManyVirtioDevicesForTheFreeLinesAreRefusedCountingThem) {
    m_config.vsock = VsockConfig { 3, m_directory / "vsock.sock" };
    for (int i = 0; i < 18; ++i) {
        auto const path = m_directory / ("disk" + std::to_string(i));
        std::ofstream(path).put('\0');
        std::filesystem::resize_file(path, 4096);
        DiskConfig disk;
        disk.id = "d" + std::to_string(i);
        disk.path = path;
        disk.engine = DiskConfig::Engine::Sync;
        m_config.disks.push_back(disk);
    }
    auto machine = Machine::create(m_config, m_hypervisor);
    ASSERT_FALSE(machine);
    // validate() counts them before anything is built, as kvmmd's define does.
    EXPECT_NE(machine.error().message().find("more than the 18 a machine holds"), std::string::npos)
        << machine.error().message();
}

// Pauses a running machine whose guest waits for a kick, saves it, and stops it.
std::vector<std::byte> save_waiting_machine(Machine& machine, std::future<StopReason>& stopped) {
    EXPECT_TRUE(machine.pause());
    auto blob = machine.save_state();
    EXPECT_TRUE(blob) << blob.error().message();
    machine.request_stop(StopReason { StopReason::Cause::HostSignal, "test", 15 });
    EXPECT_EQ(stopped.wait_for(10s), std::future_status::ready);
    return blob ? *blob : std::vector<std::byte> {};
}

TEST_F(MachineTest, SaveRestoreSave_GivesTheSameStateForEveryVcpuTheVmAndEveryDevice) {
    m_config.vcpu_count = 2;
    m_config.virtio_console = true;
    m_hypervisor.add_vcpu_script(0, { out(COM1, 'x'), wait_for_kick(), wait_for_kick() });
    m_hypervisor.add_vcpu_script(1, { wait_for_kick(), wait_for_kick() });
    auto first = MUST(Machine::create(m_config, m_hypervisor));
    auto first_stopped = run(*first);
    auto const deadline = std::chrono::steady_clock::now() + 10s;
    while (MUST(first->metrics()).vcpus.at(0).io == 0)
        ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    auto const saved = save_waiting_machine(*first, first_stopped);
    ASSERT_FALSE(saved.empty());

    // A second machine from the same configuration takes the state in place of its boot state.
    auto second = MUST(Machine::create(m_config, m_hypervisor));
    auto const restored = second->restore_state(saved);
    ASSERT_TRUE(restored) << restored.error().message();
    auto second_stopped = run(*second);
    EXPECT_EQ(save_waiting_machine(*second, second_stopped), saved);
}

TEST_F(MachineTest, SavingARunningMachineIsRefused) {
    m_hypervisor.add_vcpu_script(0, { wait_for_kick(), wait_for_kick() });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    auto stopped = run(*machine);
    auto refused = machine->save_state();
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().message(), "the microVM must be paused to save its state");
    auto const blob = save_waiting_machine(*machine, stopped);
    auto late = machine->restore_state(blob);
    ASSERT_FALSE(late);
    EXPECT_EQ(late.error().message(), "a saved state is restored only into a machine that has not run");
}

TEST_F(MachineTest, ADamagedStateOrOneOfAnotherMachineIsRefusedNamingWhy) {
    m_hypervisor.add_vcpu_script(0, { wait_for_kick(), wait_for_kick() });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    auto stopped = run(*machine);
    auto const blob = save_waiting_machine(*machine, stopped);
    ASSERT_FALSE(blob.empty());

    auto damaged = blob;
    damaged.back() ^= std::byte { 1 };
    auto fresh = MUST(Machine::create(m_config, m_hypervisor));
    auto checksum = fresh->restore_state(damaged);
    ASSERT_FALSE(checksum);
    EXPECT_NE(checksum.error().message().find("checksum"), std::string::npos) << checksum.error().message();

    auto truncated = std::vector<std::byte>(blob.begin(), blob.begin() + static_cast<ptrdiff_t>(blob.size() / 2));
    EXPECT_FALSE(fresh->restore_state(truncated));

    m_config.vcpu_count = 2;
    auto bigger = MUST(Machine::create(m_config, m_hypervisor));
    auto shape = bigger->restore_state(blob);
    ASSERT_FALSE(shape);
    EXPECT_EQ(shape.error().message(), "machine state: vcpu_count 1 is not this machine's 2");

    m_config.vcpu_count = 1;
    m_config.rng.reset(); // one device fewer
    auto other = MUST(Machine::create(m_config, m_hypervisor));
    auto devices = other->restore_state(blob);
    ASSERT_FALSE(devices);
    EXPECT_NE(devices.error().message().find("the state has 7 devices, this machine has 6"), std::string::npos)
        << devices.error().message();
}

// A snapshot of a paused machine, through the files: the memory file and the SnapshotFile.
class SnapshotMachineTest : public MachineTest {
protected:
    std::string snapshot_path() const { return m_directory / "vm.snap"; }
    std::string memory_path() const { return m_directory / "vm.mem"; }

    // Runs a one-vCPU machine that writes a byte to guest RAM's first page, then snapshots it.
    void snapshot_running_machine() {
        m_hypervisor.add_vcpu_script(0, { wait_for_kick(), wait_for_kick() });
        auto machine = MUST(Machine::create(m_config, m_hypervisor));
        auto stopped = run(*machine);
        ASSERT_TRUE(machine->pause());
        auto const report = machine->write_snapshot(snapshot_path(), memory_path(), "{\"config\":1}");
        ASSERT_TRUE(report) << report.error().message();
        EXPECT_EQ(report->memory_bytes, m_config.memory_size);
        EXPECT_LT(report->memory_bytes_written, m_config.memory_size) << "untouched RAM is left as holes";
        m_saved = MUST(machine->save_state());
        machine->request_stop(StopReason { StopReason::Cause::HostSignal, "test", 15 });
        ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
    }

    RestoreSource source(SnapshotFile const& file, bool paused = false) const {
        return RestoreSource { file.machine_state, file.memory_layout, memory_path(), paused };
    }

    std::vector<std::byte> m_saved;
};

TEST_F(SnapshotMachineTest, ARestoredMachineHasTheSavedStateAndNeverReadsTheKernel) {
    snapshot_running_machine();
    auto const file = MUST(SnapshotFile::read(snapshot_path()));
    EXPECT_EQ(file.config_json, "{\"config\":1}");
    EXPECT_EQ(file.memory_size(), m_config.memory_size);

    std::filesystem::remove(m_config.kernel_path); // the restore must not need it
    m_hypervisor.add_vcpu_script(0, { wait_for_kick(), wait_for_kick() });
    auto restored = Machine::create_restored(m_config, m_hypervisor, source(file));
    ASSERT_TRUE(restored) << restored.error().message();
    auto stopped = run(**restored);
    EXPECT_EQ(save_waiting_machine(**restored, stopped), m_saved);
}

TEST_F(SnapshotMachineTest, ARestoredPausedMachineRunsNoVcpuUntilResumed) {
    snapshot_running_machine();
    auto const file = MUST(SnapshotFile::read(snapshot_path()));
    m_hypervisor.add_vcpu_script(0, { out(COM1, 'r'), out(POWER_CONTROL_PORT, POWER_OFF) });
    auto restored = MUST(Machine::create_restored(m_config, m_hypervisor, source(file, true)));
    EXPECT_TRUE(restored->paused());
    auto stopped = run(*restored);
    EXPECT_EQ(stopped.wait_for(200ms), std::future_status::timeout) << "a paused machine ran its guest";
    EXPECT_EQ(MUST(restored->metrics()).vcpus.at(0).io, 0u);
    ASSERT_TRUE(restored->resume());
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(stopped.get().cause, StopReason::Cause::PowerOff);
}

TEST_F(SnapshotMachineTest, AShortMemoryFileIsRefusedNamingIt) {
    snapshot_running_machine();
    auto const file = MUST(SnapshotFile::read(snapshot_path()));
    std::filesystem::resize_file(memory_path(), m_config.memory_size - 4096);
    auto restored = Machine::create_restored(m_config, m_hypervisor, source(file));
    ASSERT_FALSE(restored);
    EXPECT_NE(restored.error().message().find("too short"), std::string::npos) << restored.error().message();
    EXPECT_NE(restored.error().message().find(memory_path()), std::string::npos) << restored.error().message();
}

TEST_F(SnapshotMachineTest, ASnapshotOfAnotherConfigurationIsRefusedNamingTheDifference) {
    snapshot_running_machine();
    auto const file = MUST(SnapshotFile::read(snapshot_path()));
    m_config.vcpu_count = 2;
    auto more_vcpus = Machine::create_restored(m_config, m_hypervisor, source(file));
    ASSERT_FALSE(more_vcpus);
    EXPECT_EQ(more_vcpus.error().message(), "machine state: vcpu_count 1 is not this machine's 2");

    m_config.vcpu_count = 1;
    m_config.memory_size = 128 << 20;
    auto more_memory = Machine::create_restored(m_config, m_hypervisor, source(file));
    ASSERT_FALSE(more_memory);
    EXPECT_NE(more_memory.error().message().find("memory layout"), std::string::npos) << more_memory.error().message();
}

TEST_F(SnapshotMachineTest, ASnapshotThatCannotBeWrittenLeavesTheOldFilesAndNoPartialOnes) {
    snapshot_running_machine();
    auto const old_snapshot = MUST(SnapshotFile::read(snapshot_path()));
    m_hypervisor.add_vcpu_script(0, { wait_for_kick(), wait_for_kick() });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    auto stopped = run(*machine);
    ASSERT_TRUE(machine->pause());
    // The snapshot file's directory does not exist: the memory file, written first, must not
    // replace the old one either.
    auto const missing = m_directory / "missing/vm.snap";
    auto const failed = machine->write_snapshot(missing, memory_path(), "{\"config\":2}");
    ASSERT_FALSE(failed);
    EXPECT_NE(failed.error().message().find(missing), std::string::npos) << failed.error().message();
    for (auto const& entry : std::filesystem::directory_iterator(m_directory.path()))
        EXPECT_EQ(entry.path().filename().string().find(".partial"), std::string::npos) << entry.path();
    auto const old_memory = std::filesystem::last_write_time(memory_path());
    EXPECT_EQ(MUST(SnapshotFile::read(snapshot_path())).config_json, old_snapshot.config_json);
    EXPECT_EQ(std::filesystem::last_write_time(memory_path()), old_memory);
    machine->request_stop(StopReason { StopReason::Cause::HostSignal, "test", 15 });
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
}

TEST_F(SnapshotMachineTest, CreatingASnapshotOfARunningMachineIsRefusedAndWritesNothing) {
    m_hypervisor.add_vcpu_script(0, { wait_for_kick(), wait_for_kick() });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    auto stopped = run(*machine);
    auto const refused = machine->write_snapshot(snapshot_path(), memory_path(), "{}");
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("paused"), std::string::npos);
    EXPECT_FALSE(std::filesystem::exists(snapshot_path()));
    EXPECT_FALSE(std::filesystem::exists(memory_path()));
    save_waiting_machine(*machine, stopped);
}

// Diff snapshots on the fake hypervisor: the pages it logs for the vCPUs (mark_page_dirty)
// and the pages written through GuestMemory are what a Diff holds; every snapshot starts a new
// record, and a Diff that fails keeps its pages for the next one.
TEST_F(SnapshotMachineTest, ADiffHoldsThePagesWrittenSinceTheLastSnapshotAndAFailedOneKeepsThem) {
    m_config.track_dirty_pages = true;
    m_hypervisor.add_vcpu_script(0, { wait_for_kick(), wait_for_kick() });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    auto* vm = m_hypervisor.last_vm();
    ASSERT_NE(vm, nullptr);
    EXPECT_TRUE(vm->dirty_logging());
    auto stopped = run(*machine);
    ASSERT_TRUE(machine->pause());
    auto const diff_path = m_directory / "diff.mem";
    // The first Diff holds what the boot loader wrote (the kernel, boot parameters, ACPI).
    auto const first = MUST(machine->write_snapshot(snapshot_path(), diff_path, "{}", SnapshotType::Diff));
    EXPECT_EQ(first.type, SnapshotType::Diff);
    EXPECT_GT(first.memory_bytes_written, 0u);
    EXPECT_EQ(std::filesystem::file_size(diff_path), m_config.memory_size);
    EXPECT_EQ(MUST(SnapshotFile::read(snapshot_path())).type, SnapshotType::Diff);

    // Nothing written since: an empty Diff; then two pages the vCPUs wrote.
    EXPECT_EQ(MUST(machine->write_snapshot(snapshot_path(), diff_path, "{}", SnapshotType::Diff)).memory_bytes_written,
              0u);
    vm->mark_page_dirty(0, 2048);
    vm->mark_page_dirty(0, 2050);
    auto const missing = m_directory / "missing/vm.snap";
    ASSERT_FALSE(machine->write_snapshot(missing, diff_path, "{}", SnapshotType::Diff));
    vm->mark_page_dirty(0, 3000);
    auto const second = MUST(machine->write_snapshot(snapshot_path(), diff_path, "{}", SnapshotType::Diff));
    EXPECT_EQ(second.memory_bytes_written, 3u * 4096) << "the failed Diff's two pages and the new one";

    // A Full snapshot starts a new record too.
    vm->mark_page_dirty(0, 10);
    MUST(machine->write_snapshot(snapshot_path(), memory_path(), "{}", SnapshotType::Full));
    EXPECT_EQ(MUST(machine->write_snapshot(snapshot_path(), diff_path, "{}", SnapshotType::Diff)).memory_bytes_written,
              0u);
    machine->request_stop(StopReason { StopReason::Cause::HostSignal, "test", 15 });
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
}

TEST_F(SnapshotMachineTest, ADiffWithoutDirtyPageTrackingIsRefusedAndWritesNothing) {
    m_hypervisor.add_vcpu_script(0, { wait_for_kick(), wait_for_kick() });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    EXPECT_FALSE(m_hypervisor.last_vm()->dirty_logging());
    auto stopped = run(*machine);
    ASSERT_TRUE(machine->pause());
    auto const refused = machine->write_snapshot(snapshot_path(), memory_path(), "{}", SnapshotType::Diff);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("track_dirty_pages"), std::string::npos) << refused.error().message();
    EXPECT_FALSE(std::filesystem::exists(snapshot_path()));
    EXPECT_FALSE(std::filesystem::exists(memory_path()));
    machine->request_stop(StopReason { StopReason::Cause::HostSignal, "test", 15 });
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
}

} // namespace
} // namespace kvmm

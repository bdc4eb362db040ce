// Machine: one running VM and everything it owns - guest memory, the hypervisor VM, the
// devices (DeviceManager), the vCPU threads. create() builds it in phases
// (docs/ARCHITECTURE.md "Building a machine"):
//   acquire   - every host resource: the boot files, a VM from the injected Hypervisor, guest
//               RAM, the vCPUs, the event loops, console sinks, and each virtio device model
//               with its image, TAP or socket;
//   sandbox   - MachineHooks::enter_sandbox (the isolation layer's hook): from here on the
//               process opens nothing new for the machine;
//   attach    - legacy devices at their fixed ports, virtio devices at allocated MMIO windows
//               and interrupt lines, with their ioeventfds and irqfds;
//   boot      - ACPI tables describing what was attached, then the BootLoader (the Linux
//               loader: PVH or bzImage; or the firmware loader, the tables then going to the
//               firmware over fw_cfg) and the vCPUs' boot state;
//   or restore - create_restored(): in place of boot, the vCPUs, the VM and the devices take
//               a saved state; guest RAM was mapped from the memory file in acquire, and
//               neither a kernel nor ACPI tables are written;
//   run       - run(): vCPU threads start, the calling thread becomes the event loop.
//
// Threading: create() and run() on the main thread, which becomes the event
// loop (console input, signals, stop requests); one thread per vCPU.
// Destruction order matters: vCPU threads stop before devices and memory go.
#pragma once

#include "arch/x86_64/acpi/acpi_tables.h"
#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/expected.h"
#include "base/thread_annotations.h"
#include "devices/virtio/balloon/balloon_statistics.h"
#include "hypervisor/hypervisor.h"
#include "hypervisor/vm.h"
#include "memory/guest_memory.h"
#include "vmm/boot_loader.h"
#include "vmm/device_manager.h"
#include "vmm/snapshot_file.h"
#include "vmm/vcpu_thread.h"
#include "vmm/vm_config.h"
#include "vmm/vm_lifecycle.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

namespace kvmm {

class BufferedSink;
class FwCfg;
struct FirmwareKernel;
class ByteSink;
class ConsoleServer;
class I8042;
class Serial16550;

// What the layers around the builder plug into it.
struct MachineHooks {
    // Called once every host resource is open and before any device is attached or guest
    // code is loaded (the isolation layer installs its filters here). An error stops the build.
    std::function<Expected<void>()> enter_sandbox;
    // Called on each vCPU thread before its vCPU first runs (VcpuThread's thread entry), and
    // on the calling thread of run() once the vCPU threads are started, before it serves any
    // event: each installs its thread role's seccomp filter. An error stops the machine.
    std::function<Expected<void>(uint32_t vcpu_index)> enter_vcpu_thread;
    std::function<Expected<void>()> enter_event_loop;
};

// Where a restored machine comes from (PUT /snapshot/load): the machine state and memory
// layout of a SnapshotFile and the memory file to map.
struct RestoreSource {
    std::vector<std::byte> machine_state;
    std::vector<GuestRegionSpec> memory_layout;
    std::string memory_file_path;
    // Paused: run() serves events but starts no vCPU until resume().
    bool start_paused { false };
};

// What write_snapshot() wrote and how long it took.
struct SnapshotReport {
    uint64_t memory_bytes { 0 };         // the memory file's length
    uint64_t memory_bytes_written { 0 }; // pages with data (all-zero pages are holes)
    uint64_t state_bytes { 0 };          // the snapshot file's length
    SnapshotType type { SnapshotType::Full };
    std::chrono::microseconds state_time { 0 };
    std::chrono::microseconds memory_time { 0 };
};

// The balloon as GET /balloon/statistics reports it.
struct BalloonReport {
    uint64_t target_mib { 0 };
    uint64_t actual_mib { 0 };
    uint32_t actual_pages { 0 };
    virtio::BalloonStatistics statistics;
};

class Machine {
public:
    // Builds the machine `config` describes on `hypervisor` (KvmHypervisor in kvmm,
    // FakeHypervisor in unit tests). Everything that can be checked without the hypervisor is
    // checked first, so bad input fails fast and the same way on hosts without one.
    static Expected<std::unique_ptr<Machine>> create(VmConfig const& config, Hypervisor& hypervisor,
                                                     MachineHooks hooks = {});
    // Builds the machine `config` describes with guest RAM mapped privately from the memory
    // file (pages load on first touch) and the vCPUs, VM and devices restored from the state,
    // instead of booting: the kernel and initrd are not read. The memory layout must be the
    // one `config` gives and the memory file exactly that long; a state of another machine
    // shape is refused naming the difference (restore_state).
    static Expected<std::unique_ptr<Machine>> create_restored(VmConfig const& config, Hypervisor& hypervisor,
                                                              RestoreSource source, MachineHooks hooks = {});
    ~Machine();

    // The signals that stop kvmm (SIGINT, SIGTERM, SIGHUP): blocked in every thread and read
    // from a signalfd by the event loop. Threads created before run() must block them too.
    static sigset_t stop_signals();

    // Starts the vCPUs and serves events until the VM stops; returns why it stopped.
    StopReason run();

    // Control from other threads (the API thread). Each runs on the event-loop thread and
    // returns its outcome; after the VM has stopped they fail with a message saying so.
    // Pause stops every vCPU (out of guest mode) and all device work; resume restarts both.
    Expected<void> pause();
    Expected<void> resume();
    // Presses Ctrl+Alt+Del on the i8042 keyboard (the guest decides what that means).
    Expected<void> send_ctrl_alt_del();
    // New limits for a running disk or network interface, by configured id (PATCH /drives,
    // PATCH /network-interfaces; DeviceManager::update_disk_rate_limit). Paused or not.
    Expected<void> update_disk_rate_limit(std::string const& id, RateLimitConfig const& changes);
    Expected<void> update_net_rate_limits(std::string const& id, std::optional<RateLimitConfig> const& rx_changes,
                                          std::optional<RateLimitConfig> const& tx_changes);
    // Moves a running disk to another image (PATCH /drives path_on_host); refused while paused.
    Expected<void> replace_disk_image(std::string const& id, std::string const& path);
    bool paused() const { return m_paused.load(); }
    // Asks run() to return with `reason` (e.g. the API's stop); any thread.
    void request_stop(StopReason reason);
    // The balloon (PATCH /balloon, PATCH /balloon/statistics, GET /balloon/statistics); each
    // fails, saying so, when the machine has no balloon.
    Expected<void> set_balloon_target(uint64_t target_mib);
    Expected<void> set_balloon_statistics_interval(std::chrono::seconds interval);
    Expected<BalloonReport> balloon_report();

    // The machine's state (docs/ARCHITECTURE.md "Saved state"): a sealed blob (base/state_io.h)
    // holding every vCPU, the VM's interrupt controllers and clock, and every device; guest
    // memory is not in it. save_state() needs the machine paused (any thread; it runs on the
    // event loop). restore_state() puts such a blob into a machine built from the same
    // configuration that has not run yet, in place of the boot state; it refuses (naming the
    // field) a blob that is damaged, of another version or of another machine shape, and a
    // machine it refused half-way is to be discarded. Builder thread.
    Expected<std::vector<std::byte>> save_state();
    Expected<void> restore_state(std::span<std::byte const> blob);

    // PUT /snapshot/create: with the machine paused, saves its state (disks' in-flight
    // requests completed and flushed first), writes guest RAM to `memory_path` and a
    // SnapshotFile with `config_json` to `snapshot_path`, each through a temporary file that
    // is renamed only once complete, the memory file first. Any thread but the event loop's;
    // the caller keeps the machine paused throughout (the API thread serves one request at a
    // time). On failure neither target is touched.
    // With dirty page tracking (VmConfig::track_dirty_pages) every snapshot starts a new dirty
    // record, and a Diff snapshot's memory file holds only the pages written since the snapshot
    // before it (or since the machine was built or loaded): those the hypervisor logged for
    // the vCPUs OR'd with those the devices wrote through GuestMemory. A snapshot that fails
    // puts the pages it took back, so the next Diff still has them. Diff without tracking is
    // refused.
    Expected<SnapshotReport> write_snapshot(std::string const& snapshot_path, std::string const& memory_path,
                                            std::string const& config_json, SnapshotType type = SnapshotType::Full);
    // The guest memory layout (for snapshots), fixed at create.
    std::vector<GuestRegionSpec> memory_layout() const;

    // The devices as attached (id, kind, ports or window, line), for inspection and tests.
    // Any thread once built: the registry does not change after create().
    std::vector<DeviceEntry> const& devices() const { return m_devices->entries(); }

    using DeviceMetrics = kvmm::DeviceMetrics;
    struct Metrics {
        std::vector<VcpuThread::ExitCounts> vcpus;
        std::vector<DeviceMetrics> devices;
    };
    // A consistent snapshot, taken on the event-loop thread; any thread.
    Expected<Metrics> metrics();

private:
    Machine(VmConfig config, GuestMemory memory, std::unique_ptr<Vm> vm, std::unique_ptr<VmLifecycle> lifecycle,
            std::unique_ptr<BootLoader> boot_loader);

    // The phases of create(), in order.
    Expected<void> acquire();
    // Waits for the guest RAM's registration that acquire() started (and returns its error).
    Expected<void> finish_memory_registration();
    Expected<void> acquire_console(std::unique_ptr<ByteSink>& serial_output,
                                   std::shared_ptr<ByteSink>& virtio_console_output);
    Expected<void> attach_devices();
    Expected<void> attach_legacy_devices();
    Expected<void> boot();
    // Firmware boot: what the firmware learns over fw_cfg (vmm/firmware_config.h).
    Expected<void> configure_firmware(x86_64::AcpiConfig const& acpi);
    Expected<void> restore(std::span<std::byte const> machine_state);
    // The pages written since the last call, per region (hypervisor log OR devices' writes).
    Expected<std::vector<std::vector<uint64_t>>> take_dirty_pages();
    // Gives pages taken by take_dirty_pages() back (a failed snapshot).
    void return_dirty_pages(std::vector<std::vector<uint64_t>> const& pages);
    Expected<SnapshotReport> write_snapshot_files(std::string const& snapshot_path, std::string const& memory_path,
                                                  SnapshotFile const& file,
                                                  std::vector<std::vector<uint64_t>> const* dirty_pages);
    void wrap_vcpus();
    Expected<virtio::BalloonDevice*> balloon() const;
    // Input from the host console goes to the device that is the console.
    std::function<size_t(std::span<uint8_t const>)> console_receiver();
    Expected<void> serve_events();
    void stop_vcpus();
    void add_console_output_metrics(std::vector<DeviceMetrics>& devices) const;
    // Runs `work` on the event-loop thread and waits for it.
    Expected<void> call_on_loop(std::function<Expected<void>()> work);
    void run_posted_work();
    void fail_posted_work();

    VmConfig m_config;
    GuestMemory m_memory;
    std::unique_ptr<Vm> m_vm;
    std::unique_ptr<VmLifecycle> m_lifecycle;
    // Device work runs on this loop (the thread that calls run()); it outlives the devices.
    std::optional<EventLoop> m_event_loop;
    // While paused, only this loop runs: signals, stop requests and posted work, no devices.
    std::optional<EventLoop> m_control_loop;
    // --console socket=PATH: serves the console on m_event_loop; destroyed before the loop.
    std::unique_ptr<ConsoleServer> m_console_server;
    // --console stdio or file=PATH: the console device's output, drained by m_event_loop.
    std::unique_ptr<BufferedSink> m_console_output;
    struct PostedWork {
        std::function<Expected<void>()> work;
        std::promise<Expected<void>> done;
    };
    std::optional<EventFd> m_work_event;
    Mutex m_work_lock;
    std::deque<PostedWork> m_posted_work GUARDED_BY(m_work_lock);
    bool m_loop_finished GUARDED_BY(m_work_lock) { false };
    std::atomic<bool> m_paused { false };
    bool m_started { false }; // run() was called (builder/main thread only)
    MachineHooks m_hooks;     // set by create(); read by the builder and run() (main thread)
    std::unique_ptr<BootLoader> m_boot_loader;
    // Firmware boot only (--firmware): the fw_cfg device, and a kernel handed to the firmware.
    std::shared_ptr<FwCfg> m_fw_cfg;
    std::unique_ptr<FirmwareKernel> m_firmware_kernel;
    // The serial port's output, made in acquire, attached with the 16550 in attach.
    std::unique_ptr<ByteSink> m_serial_output;
    std::shared_ptr<Serial16550> m_serial;
    std::shared_ptr<I8042> m_i8042;
    std::unique_ptr<DeviceManager> m_devices;
    // Created in acquire, given their boot state in boot, then run by m_vcpus.
    std::vector<std::unique_ptr<Vcpu>> m_unconfigured_vcpus;
    // The guest RAM's registration (Vm::map_memory: KVM_SET_USER_MEMORY_REGION, which waits
    // for an RCU grace period, 5-12 ms on a busy host) runs on a helper thread started by
    // acquire(), while this thread creates the vCPUs and devices, writes the ACPI tables and
    // the kernel (host writes, no slot needed) and sets the boot registers;
    // finish_memory_registration() waits for it before anything needs the slots (a vCPU
    // running, restored clocks). The helper reads m_memory and m_vm only. Declared after them:
    // destroyed, that is waited for, before them.
    std::future<Expected<void>> m_memory_registration;
    // Declared last: destroyed first, so no vCPU runs while the rest is torn down.
    std::vector<std::unique_ptr<VcpuThread>> m_vcpus;
};

} // namespace kvmm

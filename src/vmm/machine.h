// Machine: one running VM and everything it owns - guest memory, the
// hypervisor VM, the buses and devices, the vCPU threads - built in one
// straight-line sequence that reads as the boot order:
//   config check -> kernel/initrd files -> guest RAM -> KVM VM, TSS, irqchip+PIT,
//   memory slots -> ACPI tables -> kernel, initrd, command line, boot tables ->
//   devices on the buses -> vCPUs (CPUID, MSRs, FPU, LAPIC; BSP boot registers).
//
// Threading: create() and run() on the main thread, which becomes the event
// loop (console input, signals, stop requests); one thread per vCPU.
// Destruction order matters: vCPU threads stop before devices and memory go.
#pragma once

#include "arch/x86_64/kernel_loader.h"
#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/expected.h"
#include "devices/bus/bus.h"
#include "hypervisor/vm.h"
#include "memory/guest_memory.h"
#include "vmm/vcpu_thread.h"
#include "vmm/virtio_devices.h"
#include "vmm/vm_config.h"
#include "vmm/vm_lifecycle.h"

#include <atomic>
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
class ConsoleServer;
class I8042;
class Serial16550;

class Machine {
public:
    static Expected<std::unique_ptr<Machine>> create(VmConfig const& config);
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
    // PATCH /network-interfaces; VirtioDevices::update_disk_rate_limit). Paused or not.
    Expected<void> update_disk_rate_limit(std::string const& id, RateLimitConfig const& changes);
    Expected<void> update_net_rate_limits(std::string const& id, std::optional<RateLimitConfig> const& rx_changes,
                                          std::optional<RateLimitConfig> const& tx_changes);
    // Moves a running disk to another image (PATCH /drives path_on_host); refused while paused.
    Expected<void> replace_disk_image(std::string const& id, std::string const& path);
    bool paused() const { return m_paused.load(); }
    // Asks run() to return with `reason` (e.g. the API's stop); any thread.
    void request_stop(StopReason reason);
    VirtioDevices& virtio() { return *m_virtio; }

    struct DeviceMetrics {
        std::string name;
        std::vector<std::pair<std::string, uint64_t>> counters;
    };
    struct Metrics {
        std::vector<VcpuThread::ExitCounts> vcpus;
        std::vector<DeviceMetrics> devices;
    };
    // A consistent snapshot, taken on the event-loop thread; any thread.
    Expected<Metrics> metrics();

private:
    Machine(VmConfig config, GuestMemory memory, std::unique_ptr<Vm> vm, std::unique_ptr<VmLifecycle> lifecycle);

    Expected<void> load_guest(std::span<std::byte const> kernel, std::span<std::byte const> initrd);
    Expected<void> create_devices();
    Expected<void> create_vcpus();
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
    std::mutex m_work_lock; // guards m_posted_work and m_loop_finished
    std::deque<PostedWork> m_posted_work;
    bool m_loop_finished { false };
    std::atomic<bool> m_paused { false };
    Bus m_pio_bus { "port I/O" };
    Bus m_mmio_bus { "MMIO" };
    std::shared_ptr<Serial16550> m_serial;
    std::shared_ptr<I8042> m_i8042;
    std::unique_ptr<VirtioDevices> m_virtio;
    std::optional<x86_64::BootInfo> m_boot_info;
    // Declared last: destroyed first, so no vCPU runs while the rest is torn down.
    std::vector<std::unique_ptr<VcpuThread>> m_vcpus;
};

} // namespace kvmm

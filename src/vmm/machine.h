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
#include "base/event_loop.h"
#include "base/expected.h"
#include "devices/bus/bus.h"
#include "hypervisor/vm.h"
#include "memory/guest_memory.h"
#include "vmm/vcpu_thread.h"
#include "vmm/virtio_devices.h"
#include "vmm/vm_config.h"
#include "vmm/vm_lifecycle.h"

#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace kvmm {

class Serial16550;

class Machine {
public:
    static Expected<std::unique_ptr<Machine>> create(VmConfig const& config);
    ~Machine();

    // Starts the vCPUs and serves events until the VM stops; returns why it stopped.
    StopReason run();

private:
    Machine(VmConfig config, GuestMemory memory, std::unique_ptr<Vm> vm, std::unique_ptr<VmLifecycle> lifecycle);

    Expected<void> load_guest(std::span<std::byte const> kernel, std::span<std::byte const> initrd);
    Expected<void> create_devices();
    Expected<void> create_vcpus();
    Expected<void> serve_events();
    void stop_vcpus();

    VmConfig m_config;
    GuestMemory m_memory;
    std::unique_ptr<Vm> m_vm;
    std::unique_ptr<VmLifecycle> m_lifecycle;
    // Device work runs on this loop (the thread that calls run()); it outlives the devices.
    std::optional<EventLoop> m_event_loop;
    Bus m_pio_bus { "port I/O" };
    Bus m_mmio_bus { "MMIO" };
    std::shared_ptr<Serial16550> m_serial;
    std::unique_ptr<VirtioDevices> m_virtio;
    std::optional<x86_64::BootInfo> m_boot_info;
    // Declared last: destroyed first, so no vCPU runs while the rest is torn down.
    std::vector<std::unique_ptr<VcpuThread>> m_vcpus;
};

} // namespace kvmm

// BootLoader: how a machine's first vCPU gets going, the "boot" phase of the builder
// (docs/ARCHITECTURE.md "Building a machine"). A loader reads what it needs from the host
// while the machine acquires its resources (create), writes the guest's start into guest
// memory once the devices are attached and the ACPI tables written (load), and says where
// the boot vCPU starts (boot_cpu_state). The Linux loader handles PVH ELF kernels and
// bzImages (arch/x86_64/kernel_loader.h); the firmware loader (vmm/firmware_boot_loader.h)
// maps a firmware image and starts at the reset vector.
//
// Threading: the builder thread.
#pragma once

#include "arch/x86_64/cpu_state.h"
#include "arch/x86_64/kernel_loader.h"
#include "base/expected.h"
#include "hypervisor/vm.h"
#include "memory/guest_memory.h"

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvmm {

class BootLoader {
public:
    virtual ~BootLoader() = default;

    // Maps what the loader itself puts into the guest-physical address space besides RAM (a
    // firmware ROM); acquire phase, after RAM is mapped. Nothing by default.
    virtual Expected<void> map(Vm&) { return {}; }

    // Writes the guest's start into `memory`; the ACPI RSDP is at `rsdp`. Once per machine.
    virtual Expected<void> load(GuestMemory const& memory, GuestAddress rsdp) = 0;
    // The boot vCPU's registers after load(), given its special registers as created.
    virtual Expected<x86_64::InitialCpuState> boot_cpu_state(X86SpecialRegisters const& current) const = 0;
};

class LinuxBootLoader final : public BootLoader {
public:
    // Reads the kernel and the initrd (each refused when larger than `max_size`, guest RAM:
    // it bounds what a hostile path, e.g. a device node or a huge sparse file, costs us).
    static Expected<std::unique_ptr<LinuxBootLoader>> create(std::string kernel_path,
                                                             std::optional<std::string> const& initrd_path,
                                                             std::string cmdline, uint64_t max_size);

    Expected<void> load(GuestMemory const& memory, GuestAddress rsdp) override;
    Expected<x86_64::InitialCpuState> boot_cpu_state(X86SpecialRegisters const& current) const override;

private:
    LinuxBootLoader(std::string kernel_path, std::vector<std::byte> kernel, std::vector<std::byte> initrd,
                    std::string cmdline)
        : m_kernel_path(std::move(kernel_path)), m_kernel(std::move(kernel)), m_initrd(std::move(initrd)),
          m_cmdline(std::move(cmdline)) {}

    std::string m_kernel_path;
    std::vector<std::byte> m_kernel;
    std::vector<std::byte> m_initrd;
    std::string m_cmdline;
    std::optional<x86_64::BootInfo> m_boot_info;
};

} // namespace kvmm

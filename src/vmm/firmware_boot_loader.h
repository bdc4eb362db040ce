// FirmwareBootLoader: boots a machine through firmware (--firmware PATH), e.g. SeaBIOS or
// OVMF, the way a PC starts: the image is mapped read-only so that it ends at 4 GiB, its last
// 128 KiB are also copied into RAM at 0xE0000-0xFFFFF (the legacy BIOS area, which QEMU's
// microvm also backs with writable memory, so the BIOS can keep its data there), and the boot
// vCPU starts in real mode at the reset vector, 0xFFFFFFF0. The other vCPUs wait for INIT
// and SIPI from the boot vCPU's LAPIC, as they do for a kernel. The firmware finds everything
// else through fw_cfg (vmm/firmware_config.h).
//
// The image file is untrusted input: refused when missing, empty, larger than the 16 MiB
// firmware window, or not a whole number of 4 KiB pages (firmware images are flash sizes).
//
// Threading: the builder thread.
#pragma once

#include "base/memory_mapping.h"
#include "hypervisor/vm.h"
#include "vmm/boot_loader.h"

#include <cstdint>
#include <memory>
#include <string>

namespace kvmm {

class FirmwareBootLoader final : public BootLoader {
public:
    static constexpr uint64_t MAX_IMAGE_SIZE = 16ull << 20;
    static constexpr uint64_t IMAGE_ALIGNMENT = 4096;

    // Reads and checks the image into page-aligned host memory.
    static Expected<std::unique_ptr<FirmwareBootLoader>> create(std::string path);

    // Where the image lies in guest-physical memory: [start, 4 GiB).
    uint64_t image_start() const;
    uint64_t image_size() const { return m_image.size(); }

    Expected<void> map(Vm& vm) override;
    // Copies the legacy BIOS part into RAM; `rsdp` is unused (firmware installs the ACPI
    // tables it gets over fw_cfg).
    Expected<void> load(GuestMemory const& memory, GuestAddress rsdp) override;
    Expected<x86_64::InitialCpuState> boot_cpu_state(X86SpecialRegisters const& current) const override;

private:
    FirmwareBootLoader(std::string path, MemoryMapping image) : m_path(std::move(path)), m_image(std::move(image)) {}

    std::string m_path;
    MemoryMapping m_image; // the ROM's host bytes; KVM reads them for as long as the VM lives
    bool m_loaded { false };
};

} // namespace kvmm

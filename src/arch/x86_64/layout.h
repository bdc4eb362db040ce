// The guest-physical memory map of a kvmm x86-64 VM, in one place.
//
//   0x0000_0000  real-mode IVT and BIOS data area (left zero)
//   0x0000_0500  boot GDT (BOOT_GDT_ADDRESS), then an empty IDT
//   0x0000_6000  PVH hvm_start_info, its module list and memory map
//   0x0000_7000  Linux zero page (struct boot_params)
//   0x0000_8ff0  initial stack pointer of the boot vCPU (grows down)
//   0x0000_9000  boot page tables: PML4, PDPT, 4 page directories (to 0xE000)
//   0x0002_0000  kernel command line (up to 64 KiB)
//   0x0009_fc00  - 0x0010_0000 reserved: EBDA, VGA hole, option ROMs, and
//   0x000e_0000  ACPI tables (RSDP first, found by legacy scans too)
//   0x0010_0000  kernel (bzImage protected-mode part) or PVH ELF segments
//   ...          initrd, as high as its limit allows
//   0xc000_0000  MMIO gap: virtio-mmio windows, IOAPIC, LAPIC, KVM's TSS and identity map
//   0xff00_0000  firmware window (--firmware): the image ends at 4 GiB, read-only
//   0x1_0000_0000 RAM above 4 GiB, when there is more than 3 GiB
#pragma once

#include "base/expected.h"
#include "memory/guest_memory.h"

#include <cstdint>
#include <vector>

namespace kvmm::x86_64 {

inline constexpr uint64_t MiB = 1ull << 20;
inline constexpr uint64_t GiB = 1ull << 30;

inline constexpr uint64_t MMIO_GAP_START = 0xC000'0000;
inline constexpr uint64_t MMIO_GAP_END = 0x1'0000'0000;
inline constexpr uint64_t VIRTIO_MMIO_BASE = 0xD000'0000;
inline constexpr uint64_t IOAPIC_ADDRESS = 0xFEC0'0000;
inline constexpr uint64_t LAPIC_ADDRESS = 0xFEE0'0000;
// KVM needs three pages for its real-mode TSS and one for an identity page table on Intel
// hosts; they must not be RAM, a device or firmware. KVM's defaults (0xfffbc000-0xfffbffff)
// lie inside a firmware image larger than 256 KiB, so they sit below the firmware window,
// above the LAPIC, where QEMU also puts them.
inline constexpr uint64_t KVM_IDENTITY_MAP_ADDRESS = 0xFEFF'C000;
inline constexpr uint64_t KVM_TSS_ADDRESS = 0xFEFF'D000;
inline constexpr uint64_t KVM_PRIVATE_PAGES_SIZE = 0x4000; // identity map + TSS
// Firmware (--firmware) is mapped so that it ends at 4 GiB, where the reset vector is; the
// window holds images up to 16 MiB (OVMF's largest build is 4 MiB).
inline constexpr uint64_t FIRMWARE_WINDOW_START = 0xFF00'0000;
inline constexpr uint64_t FIRMWARE_WINDOW_END = 0x1'0000'0000;
// The last 128 KiB of the image also appear at 0xE0000-0xFFFFF (the legacy BIOS area), where
// a PC BIOS runs in real mode after its first far jump.
inline constexpr uint64_t LEGACY_BIOS_START = 0xE0000;
inline constexpr uint64_t LEGACY_BIOS_SIZE = 0x20000;

inline constexpr uint64_t BOOT_GDT_ADDRESS = 0x500;
inline constexpr uint64_t BOOT_IDT_ADDRESS = 0x540;
inline constexpr uint64_t PVH_START_INFO_ADDRESS = 0x6000;
inline constexpr uint64_t PVH_MODULE_LIST_ADDRESS = 0x6040;
inline constexpr uint64_t PVH_MEMORY_MAP_ADDRESS = 0x6080;
inline constexpr uint64_t PVH_MEMORY_MAP_MAX_ENTRIES = (0x7000 - PVH_MEMORY_MAP_ADDRESS) / 24;
inline constexpr uint64_t ZERO_PAGE_ADDRESS = 0x7000;
inline constexpr uint64_t BOOT_STACK_POINTER = 0x8ff0;
inline constexpr uint64_t PML4_ADDRESS = 0x9000;
inline constexpr uint64_t PDPT_ADDRESS = 0xA000;
inline constexpr uint64_t PAGE_DIRECTORY_ADDRESS = 0xB000; // four pages: the first 4 GiB in 2 MiB pages
inline constexpr uint64_t CMDLINE_ADDRESS = 0x20000;
inline constexpr uint64_t CMDLINE_MAX_SIZE = 0x10000; // including the terminating NUL
inline constexpr uint64_t EBDA_START = 0x9FC00;
inline constexpr uint64_t ACPI_TABLES_START = 0xE0000;
inline constexpr uint64_t ACPI_TABLES_END = 0x100000;
inline constexpr uint64_t HIGH_MEMORY_START = 0x100000; // 1 MiB: kernels load here or above

// 16 MiB leaves room for boot structures, a small kernel and its initrd; 1 TiB stays within
// the 40 guest-physical address bits every x86-64 host offers.
inline constexpr uint64_t MIN_MEMORY_SIZE = 16 * MiB;
inline constexpr uint64_t MAX_MEMORY_SIZE = 1024 * GiB;

// Splits `memory_size` bytes of RAM into the region below the MMIO gap and, for more than
// 3 GiB, a region from 4 GiB up. Errors name the size.
Expected<std::vector<GuestRegionSpec>> ram_regions(uint64_t memory_size);

// The end (exclusive) of the RAM below the MMIO gap.
uint64_t low_memory_end(GuestMemory const& memory);

// E820 memory types (ACPI 6.5 section 15, table 15.1).
enum class E820Type : uint32_t { Ram = 1, Reserved = 2, Acpi = 3 };
struct E820Entry {
    uint64_t address;
    uint64_t size;
    E820Type type;
};
// The memory map the guest is told about: low RAM, the reserved legacy area (with the ACPI
// tables in it), RAM from 1 MiB to the gap, and RAM above 4 GiB.
std::vector<E820Entry> memory_map(GuestMemory const& memory);
// The memory map firmware is given (fw_cfg "etc/e820"): every byte of RAM, as QEMU reports it
// (the firmware reserves its own areas below 1 MiB), and KVM's private pages as reserved.
std::vector<E820Entry> firmware_memory_map(GuestMemory const& memory);

} // namespace kvmm::x86_64

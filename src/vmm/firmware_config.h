// What a machine booted through firmware tells the firmware over fw_cfg, in one place:
//   signature and ID (the device itself), FW_CFG_NB_CPUS and FW_CFG_MAX_CPUS, FW_CFG_RAM_SIZE,
//   FW_CFG_NOGRAPHIC = 1 (there is no display: SeaBIOS then sends its screen output to the
//   serial port, adding "etc/sercon-port" = 0x3f8 itself), "etc/e820" (the real memory map),
//   "bootorder" (one device path per line, SeaBIOS's syntax), the ACPI tables as
//   "etc/acpi/rsdp" and "etc/acpi/tables" with the "etc/table-loader" script that installs
//   them, and, when a kernel is given with the firmware, the kernel, initrd and command line
//   items QEMU's -kernel provides (the bzImage split into its setup and protected-mode parts).
//
// Threading: the builder thread, before any vCPU runs.
#pragma once

#include "arch/x86_64/acpi/acpi_tables.h"
#include "arch/x86_64/layout.h"
#include "base/expected.h"
#include "devices/fw_cfg/fw_cfg.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvmm {

struct FirmwareKernel {
    std::vector<std::byte> kernel; // a bzImage
    std::vector<std::byte> initrd; // may be empty
    std::string cmdline;
};

struct FirmwareConfig {
    uint32_t vcpu_count { 1 };
    uint64_t ram_size { 0 };
    std::vector<x86_64::E820Entry> memory_map;
    x86_64::AcpiBlobs acpi;
    std::vector<std::string> boot_order;
    std::optional<FirmwareKernel> kernel;
};

// SeaBIOS's device path for the virtio-mmio device at `base` (src/boot.c,
// bootprio_find_mmio_device), for the bootorder file.
std::string virtio_mmio_boot_path(uint64_t base);

// "etc/e820": packed little-endian {u64 address, u64 length, u32 type} entries.
std::vector<uint8_t> encode_e820(std::vector<x86_64::E820Entry> const& entries);

// The table-loader script for `acpi` (devices/fw_cfg/table_loader.h): the RSDP allocated in
// the F segment (where operating systems scan for it), the tables in high memory.
Expected<std::vector<uint8_t>> acpi_table_loader_script(x86_64::AcpiBlobs const& acpi);

// Fills `fw_cfg` with everything above. Fails, naming the item, when the kernel is not a
// bzImage or an item does not fit.
Expected<void> populate_fw_cfg(FwCfg& fw_cfg, FirmwareConfig config);

} // namespace kvmm

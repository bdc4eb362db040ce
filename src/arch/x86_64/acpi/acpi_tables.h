// ACPI tables for a hardware-reduced x86-64 VM (ACPI 6.5): RSDP, XSDT, FADT,
// MADT and DSDT, written into the legacy BIOS area of guest memory.
//
// Hardware-reduced ACPI (section 4.1) frees the guest from PM timers, GPE
// blocks and SCI wiring: power-off goes through the FADT's sleep control
// register (\_S5_ in the DSDT), reset through its reset register. Debian's
// cloud kernel has no MP-table support, so the MADT is how it finds its CPUs.
#pragma once

#include "base/expected.h"
#include "memory/guest_memory.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace kvmm::x86_64 {

struct AcpiVirtioMmioDevice {
    uint64_t base;
    uint64_t size;
    uint32_t gsi;
};

struct AcpiConfig {
    uint32_t vcpu_count { 1 };
    uint16_t sleep_control_port { 0x600 };
    uint16_t reset_port { 0x600 };
    uint8_t reset_value { 0x01 };
    uint8_t power_off_sleep_type { 5 };
    bool com1_present { true };
    // MMIO byte of a pvpanic device (ACPI HID QEMU0001), if the VM has one.
    std::optional<uint64_t> pvpanic_address;
    std::vector<AcpiVirtioMmioDevice> virtio_devices;
};

// Writes the tables within [ACPI_TABLES_START, ACPI_TABLES_END) and returns the RSDP's
// address. Fails, naming the sizes, if they do not fit.
Expected<GuestAddress> write_acpi_tables(GuestMemory const& memory, AcpiConfig const& config);

// The same tables as firmware takes them over fw_cfg, laid out as QEMU hands them over:
// blob "etc/acpi/rsdp" holds the RSDP, blob "etc/acpi/tables" the DSDT, FADT, MADT and XSDT.
// Every pointer field holds an offset into the tables blob, to which the firmware adds the
// address where it placed that blob; checksums are recomputed by the firmware afterwards.
// These describe the table-loader script (devices/fw_cfg/table_loader.h) the VMM writes.
enum class AcpiBlob { Rsdp, Tables };
struct AcpiPointer {
    AcpiBlob blob; // where the pointer field is; it points into the tables blob
    uint32_t offset;
    uint8_t size;
};
struct AcpiChecksum {
    AcpiBlob blob;
    uint32_t offset; // the checksum byte
    uint32_t start;
    uint32_t length;
};
struct AcpiBlobs {
    std::vector<uint8_t> rsdp;
    std::vector<uint8_t> tables;
    std::vector<AcpiPointer> pointers;
    std::vector<AcpiChecksum> checksums; // in the order to apply them
};
Expected<AcpiBlobs> build_acpi_blobs(AcpiConfig const& config);

} // namespace kvmm::x86_64

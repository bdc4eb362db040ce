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

} // namespace kvmm::x86_64

#include "arch/x86_64/acpi/acpi_tables.h"

#include "arch/x86_64/acpi/aml.h"
#include "arch/x86_64/layout.h"

#include <cstdio>
#include <cstring>
#include <string_view>

namespace kvmm::x86_64 {

namespace {

using Bytes = std::vector<uint8_t>;

constexpr char OEM_ID[] = "KVMM  ";
constexpr char OEM_TABLE_ID[] = "KVMMVM  ";
constexpr char CREATOR_ID[] = "KVMM";
constexpr size_t HEADER_SIZE = 36;

template <typename T>
void put(Bytes& table, size_t offset, T value) {
    if (table.size() < offset + sizeof(T))
        table.resize(offset + sizeof(T));
    std::memcpy(table.data() + offset, &value, sizeof(T));
}

void append_le(Bytes& table, uint64_t value, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i)
        table.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

uint8_t checksum(uint8_t const* data, size_t length) {
    uint8_t sum = 0;
    for (size_t i = 0; i < length; ++i)
        sum = static_cast<uint8_t>(sum + data[i]);
    return static_cast<uint8_t>(-sum);
}

// System Description Table Header (5.2.6); length and checksum are set by finish().
Bytes header(std::string_view signature, uint8_t revision) {
    Bytes table(HEADER_SIZE, 0);
    std::memcpy(table.data(), signature.data(), 4);
    table[8] = revision;
    std::memcpy(table.data() + 10, OEM_ID, 6);
    std::memcpy(table.data() + 16, OEM_TABLE_ID, 8);
    put<uint32_t>(table, 24, 1);
    std::memcpy(table.data() + 28, CREATOR_ID, 4);
    put<uint32_t>(table, 32, 1);
    return table;
}

void finish(Bytes& table) {
    put<uint32_t>(table, 4, static_cast<uint32_t>(table.size()));
    table[9] = 0;
    table[9] = checksum(table.data(), table.size());
}

// Generic Address Structure (5.2.3.2) for one byte of system I/O space.
void put_io_byte_register(Bytes& table, size_t offset, uint16_t port) {
    table[offset] = 1;     // system I/O
    table[offset + 1] = 8; // register bit width
    table[offset + 2] = 0; // bit offset
    table[offset + 3] = 1; // byte access
    put<uint64_t>(table, offset + 4, port);
}

Bytes build_dsdt(AcpiConfig const& config) {
    using namespace aml;
    std::vector<Bytes> devices;
    if (config.com1_present) {
        devices.push_back(device("COM1", concat({
                                             name("_HID", eisa_id("PNP0501")),
                                             name("_UID", integer(0)),
                                             name("_CRS", resource_template({ io_port(0x3f8, 8), irq_no_flags(4) })),
                                         })));
    }
    // The CMOS RTC (PNP0B00) and the PS/2 keyboard controller (PNP0303): on a hardware-reduced
    // platform Linux binds rtc_cmos and i8042 only to devices the DSDT declares.
    devices.push_back(device("RTC", concat({
                                        name("_HID", eisa_id("PNP0B00")),
                                        name("_CRS", resource_template({ io_port(0x70, 2), irq_no_flags(8) })),
                                    })));
    devices.push_back(
        device("KBD", concat({
                          name("_HID", eisa_id("PNP0303")),
                          name("_CRS", resource_template({ io_port(0x60, 1), io_port(0x64, 1), irq_no_flags(1) })),
                      })));
    if (config.pvpanic_address) {
        // Linux's pvpanic-mmio driver binds QEMU's ACPI ID for the device.
        devices.push_back(
            device("PEVT", concat({ name("_HID", string("QEMU0001")),
                                    name("_CRS", resource_template({ memory32_fixed(
                                                     static_cast<uint32_t>(*config.pvpanic_address), 1, true) })) })));
    }
    for (size_t i = 0; i < config.virtio_devices.size(); ++i) {
        auto const& virtio = config.virtio_devices[i];
        // Linux's virtio_mmio driver binds ACPI devices with _HID "LNRO0005". Their interrupts
        // are edge-triggered, active-high GSIs on the IOAPIC, like the ISA lines.
        char device_name[5];
        std::snprintf(device_name, sizeof(device_name), "V%03X", static_cast<unsigned>(i & 0xfff));
        devices.push_back(
            device(device_name,
                   concat({ name("_HID", string("LNRO0005")), name("_UID", integer(i)),
                            name("_CRS", resource_template({ memory32_fixed(static_cast<uint32_t>(virtio.base),
                                                                            static_cast<uint32_t>(virtio.size), true),
                                                             extended_interrupt(virtio.gsi, true, false) })) })));
    }
    Bytes table = header("DSDT", 2);
    auto const system_bus = scope("\\_SB_", concat(devices));
    // \_S5_: SLP_TYPa and SLP_TYPb for soft-off (7.4.2), then two reserved values.
    auto const soft_off = name("\\_S5_", package({ integer(config.power_off_sleep_type),
                                                   integer(config.power_off_sleep_type), integer(0), integer(0) }));
    table.insert(table.end(), system_bus.begin(), system_bus.end());
    table.insert(table.end(), soft_off.begin(), soft_off.end());
    finish(table);
    return table;
}

Bytes build_fadt(AcpiConfig const& config, uint64_t dsdt_address) {
    // Fixed ACPI Description Table, revision 6 (5.2.9, table 5.9): 276 bytes.
    Bytes table = header("FACP", 6);
    table.resize(276, 0);
    put<uint32_t>(table, 40, static_cast<uint32_t>(dsdt_address));
    // IAPC_BOOT_ARCH (5.2.9.3): legacy ISA devices, an 8042, no VGA, no MSI restrictions.
    put<uint16_t>(table, 109, 0x0001 | 0x0002 | 0x0004);
    table[108] = 0x32; // CENTURY: the CMOS RTC's century register
    constexpr uint32_t RESET_REG_SUP = 1u << 10;
    constexpr uint32_t HW_REDUCED_ACPI = 1u << 20;
    put<uint32_t>(table, 112, RESET_REG_SUP | HW_REDUCED_ACPI);
    put_io_byte_register(table, 116, config.reset_port);
    table[128] = config.reset_value;
    table[131] = 5; // FADT minor version: ACPI 6.5
    put<uint64_t>(table, 140, dsdt_address);
    put_io_byte_register(table, 244, config.sleep_control_port);
    put_io_byte_register(table, 256, config.sleep_control_port);
    std::memcpy(table.data() + 268, "KVMM\0\0\0\0", 8); // hypervisor vendor identity
    finish(table);
    return table;
}

Bytes build_madt(AcpiConfig const& config) {
    // Multiple APIC Description Table (5.2.12).
    Bytes table = header("APIC", 5);
    append_le(table, LAPIC_ADDRESS, 4);
    append_le(table, 1, 4); // PCAT_COMPAT: dual 8259s are present (and masked by the OS)
    for (uint32_t id = 0; id < config.vcpu_count; ++id) {
        if (id < 255) {
            // Processor Local APIC (5.2.12.2): UID, APIC ID, enabled.
            table.insert(table.end(), { 0, 8, static_cast<uint8_t>(id), static_cast<uint8_t>(id) });
            append_le(table, 1, 4);
        } else {
            // Processor Local x2APIC (5.2.12.12) for IDs an 8-bit field cannot hold.
            table.insert(table.end(), { 9, 16, 0, 0 });
            append_le(table, id, 4);
            append_le(table, 1, 4);
            append_le(table, id, 4);
        }
    }
    // I/O APIC (5.2.12.3): ID 0, GSIs from 0.
    table.insert(table.end(), { 1, 12, 0, 0 });
    append_le(table, IOAPIC_ADDRESS, 4);
    append_le(table, 0, 4);
    // Interrupt Source Override (5.2.12.5): the PIT's IRQ 0 arrives on GSI 2, as on every PC.
    table.insert(table.end(), { 2, 10, 0, 0 });
    append_le(table, 2, 4);
    append_le(table, 0, 2);
    // Local APIC NMI (5.2.12.7): all processors, LINT1.
    table.insert(table.end(), { 4, 6, 0xff, 0, 0, 1 });
    finish(table);
    return table;
}

Bytes build_xsdt(std::vector<uint64_t> const& tables) {
    Bytes table = header("XSDT", 1);
    for (auto address : tables)
        append_le(table, address, 8);
    finish(table);
    return table;
}

Bytes build_rsdp(uint64_t xsdt_address) {
    // Root System Description Pointer, revision 2 (5.2.5.3): 36 bytes.
    Bytes rsdp(36, 0);
    std::memcpy(rsdp.data(), "RSD PTR ", 8);
    std::memcpy(rsdp.data() + 9, OEM_ID, 6);
    rsdp[15] = 2;
    put<uint32_t>(rsdp, 20, 36);
    put<uint64_t>(rsdp, 24, xsdt_address);
    rsdp[8] = checksum(rsdp.data(), 20);
    rsdp[32] = checksum(rsdp.data(), 36);
    return rsdp;
}

} // namespace

Expected<GuestAddress> write_acpi_tables(GuestMemory const& memory, AcpiConfig const& config) {
    if (config.vcpu_count == 0)
        return Error("ACPI tables need at least one vCPU");
    // Layout: RSDP first (16-byte aligned, where legacy scans look), then DSDT, FADT, MADT, XSDT.
    uint64_t cursor = ACPI_TABLES_START;
    auto place = [&](Bytes const& table) -> Expected<uint64_t> {
        uint64_t const address = (cursor + 15) & ~15ull;
        if (address + table.size() > ACPI_TABLES_END)
            return Error::format("ACPI tables do not fit in the {} KiB ACPI area ({} vCPUs, {} virtio devices)",
                                 (ACPI_TABLES_END - ACPI_TABLES_START) / 1024, config.vcpu_count,
                                 config.virtio_devices.size());
        TRY(memory.write(GuestAddress(address), std::as_bytes(std::span(table))));
        cursor = address + table.size();
        return address;
    };
    uint64_t const rsdp_address = ACPI_TABLES_START;
    cursor = rsdp_address + 36;
    auto const dsdt = TRY(place(build_dsdt(config)));
    auto const fadt = TRY(place(build_fadt(config, dsdt)));
    auto const madt = TRY(place(build_madt(config)));
    auto const xsdt = TRY(place(build_xsdt({ fadt, madt })));
    auto const rsdp = build_rsdp(xsdt);
    TRY(memory.write(GuestAddress(rsdp_address), std::as_bytes(std::span(rsdp))));
    return GuestAddress(rsdp_address);
}

Expected<AcpiBlobs> build_acpi_blobs(AcpiConfig const& config) {
    if (config.vcpu_count == 0)
        return Error("ACPI tables need at least one vCPU");
    AcpiBlobs blobs;
    auto& tables = blobs.tables;
    // Tables 16-byte aligned within the blob, which the firmware allocates 64-byte aligned.
    auto place = [&](Bytes const& table) -> uint32_t {
        tables.resize((tables.size() + 15) & ~size_t { 15 }, 0);
        auto const offset = static_cast<uint32_t>(tables.size());
        tables.insert(tables.end(), table.begin(), table.end());
        blobs.checksums.push_back(
            AcpiChecksum { AcpiBlob::Tables, offset + 9, offset, static_cast<uint32_t>(table.size()) });
        return offset;
    };
    auto const dsdt = place(build_dsdt(config));
    auto const fadt = place(build_fadt(config, dsdt));
    blobs.pointers.push_back(AcpiPointer { AcpiBlob::Tables, fadt + 40, 4 });  // FIRMWARE DSDT field
    blobs.pointers.push_back(AcpiPointer { AcpiBlob::Tables, fadt + 140, 8 }); // X_DSDT
    auto const madt = place(build_madt(config));
    auto const xsdt = place(build_xsdt({ fadt, madt }));
    blobs.pointers.push_back(AcpiPointer { AcpiBlob::Tables, xsdt + uint32_t { HEADER_SIZE }, 8 });
    blobs.pointers.push_back(AcpiPointer { AcpiBlob::Tables, xsdt + uint32_t { HEADER_SIZE } + 8, 8 });
    blobs.rsdp = build_rsdp(xsdt);
    blobs.pointers.push_back(AcpiPointer { AcpiBlob::Rsdp, 24, 8 }); // XsdtAddress
    // The RSDP's first checksum covers its ACPI 1.0 part; the extended one, over all 36 bytes,
    // includes the first, so it comes second.
    blobs.checksums.push_back(AcpiChecksum { AcpiBlob::Rsdp, 8, 0, 20 });
    blobs.checksums.push_back(AcpiChecksum { AcpiBlob::Rsdp, 32, 0, 36 });
    return blobs;
}

} // namespace kvmm::x86_64

#include "vmm/firmware_config.h"

#include "devices/fw_cfg/table_loader.h"

#include <fmt/format.h>

#include <cstring>

namespace kvmm {

namespace {

constexpr char RSDP_FILE[] = "etc/acpi/rsdp";
constexpr char TABLES_FILE[] = "etc/acpi/tables";

void append_le(std::vector<uint8_t>& bytes, uint64_t value, size_t width) {
    for (size_t i = 0; i < width; ++i)
        bytes.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

std::vector<uint8_t> to_bytes(std::span<std::byte const> bytes) {
    std::vector<uint8_t> result(bytes.size());
    if (!bytes.empty())
        std::memcpy(result.data(), bytes.data(), bytes.size());
    return result;
}

// QEMU's -kernel with firmware (hw/i386/x86.c, x86_load_linux): the bzImage's real-mode setup
// ((setup_sects or 4) + 1 sectors, boot.rst "The Real-Mode Kernel Header") and the rest go in
// separate items, which firmware loads and starts by the 16-bit boot protocol.
Expected<void> add_kernel(FwCfg& fw_cfg, FirmwareKernel const& kernel) {
    auto const& image = kernel.kernel;
    constexpr size_t HEADER_MAGIC_OFFSET = 0x202;
    constexpr size_t SETUP_SECTS_OFFSET = 0x1f1;
    if (image.size() < HEADER_MAGIC_OFFSET + 4 || std::memcmp(image.data() + HEADER_MAGIC_OFFSET, "HdrS", 4) != 0)
        return Error::format("the kernel ({} bytes) is not a bzImage (no 'HdrS' at {:#x}); with --firmware only "
                             "bzImages are handed to the firmware",
                             image.size(), HEADER_MAGIC_OFFSET);
    size_t setup_sectors = std::to_integer<uint8_t>(image[SETUP_SECTS_OFFSET]);
    if (setup_sectors == 0)
        setup_sectors = 4;
    size_t const setup_size = (setup_sectors + 1) * 512;
    if (setup_size >= image.size())
        return Error::format("the kernel's setup ({} bytes) is not smaller than the kernel ({} bytes)", setup_size,
                             image.size());
    auto const bytes = std::span<std::byte const>(image);
    TRY(fw_cfg.add_u32(fw_cfg::SETUP_SIZE, static_cast<uint32_t>(setup_size)));
    TRY(fw_cfg.add_item(fw_cfg::SETUP_DATA, to_bytes(bytes.first(setup_size))));
    TRY(fw_cfg.add_u32(fw_cfg::KERNEL_SIZE, static_cast<uint32_t>(image.size() - setup_size)));
    TRY(fw_cfg.add_item(fw_cfg::KERNEL_DATA, to_bytes(bytes.subspan(setup_size))));
    if (!kernel.initrd.empty()) {
        TRY(fw_cfg.add_u32(fw_cfg::INITRD_SIZE, static_cast<uint32_t>(kernel.initrd.size())));
        TRY(fw_cfg.add_item(fw_cfg::INITRD_DATA, to_bytes(kernel.initrd)));
    }
    std::vector<uint8_t> cmdline(kernel.cmdline.begin(), kernel.cmdline.end());
    cmdline.push_back(0);
    TRY(fw_cfg.add_u32(fw_cfg::CMDLINE_SIZE, static_cast<uint32_t>(cmdline.size())));
    TRY(fw_cfg.add_item(fw_cfg::CMDLINE_DATA, std::move(cmdline)));
    return {};
}

} // namespace

std::string virtio_mmio_boot_path(uint64_t base) { return fmt::format("/virtio-mmio@{:016x}/*", base); }

std::vector<uint8_t> encode_e820(std::vector<x86_64::E820Entry> const& entries) {
    std::vector<uint8_t> bytes;
    for (auto const& entry : entries) {
        append_le(bytes, entry.address, 8);
        append_le(bytes, entry.size, 8);
        append_le(bytes, static_cast<uint32_t>(entry.type), 4);
    }
    return bytes;
}

Expected<std::vector<uint8_t>> acpi_table_loader_script(x86_64::AcpiBlobs const& acpi) {
    TableLoader loader;
    auto file_of = [](x86_64::AcpiBlob blob) {
        return std::string(blob == x86_64::AcpiBlob::Rsdp ? RSDP_FILE : TABLES_FILE);
    };
    // The RSDP must lie in the BIOS read-only area, 16-byte aligned (ACPI 6.5, 5.2.5.1).
    TRY(loader.allocate(RSDP_FILE, acpi.rsdp.size(), 16, TableLoader::Zone::FSegment));
    TRY(loader.allocate(TABLES_FILE, acpi.tables.size(), 64, TableLoader::Zone::High));
    for (auto const& pointer : acpi.pointers)
        TRY(loader.add_pointer(file_of(pointer.blob), TABLES_FILE, pointer.offset, pointer.size));
    for (auto const& checksum : acpi.checksums)
        TRY(loader.add_checksum(file_of(checksum.blob), checksum.offset, checksum.start, checksum.length));
    return loader.script();
}

Expected<void> populate_fw_cfg(FwCfg& fw_cfg, FirmwareConfig config) {
    TRY(fw_cfg.add_u16(fw_cfg::NB_CPUS, static_cast<uint16_t>(config.vcpu_count)));
    TRY(fw_cfg.add_u16(fw_cfg::MAX_CPUS, static_cast<uint16_t>(config.vcpu_count)));
    TRY(fw_cfg.add_u64(fw_cfg::RAM_SIZE, config.ram_size));
    TRY(fw_cfg.add_u16(fw_cfg::NOGRAPHIC, 1));
    TRY(fw_cfg.add_u16(fw_cfg::BOOT_MENU, 0));
    TRY(fw_cfg.add_u64(fw_cfg::NUMA, 0)); // no NUMA nodes
    TRY(fw_cfg.add_file("etc/e820", encode_e820(config.memory_map)));
    if (!config.boot_order.empty()) {
        // One path per line with no newline after the last (QEMU's format): SeaBIOS would read
        // a trailing newline as one more, empty, entry.
        std::string order;
        for (auto const& path : config.boot_order)
            order += (order.empty() ? "" : "\n") + path;
        TRY(fw_cfg.add_file("bootorder", std::vector<uint8_t>(order.begin(), order.end())));
    }
    auto script = TRY(acpi_table_loader_script(config.acpi));
    TRY(fw_cfg.add_file(RSDP_FILE, std::move(config.acpi.rsdp)));
    TRY(fw_cfg.add_file(TABLES_FILE, std::move(config.acpi.tables)));
    TRY(fw_cfg.add_file("etc/table-loader", std::move(script)));
    if (config.kernel)
        TRY(add_kernel(fw_cfg, *config.kernel).with_context("fw_cfg kernel"));
    return {};
}

} // namespace kvmm

// Firmware boot on the fake hypervisor: the image's mapping and legacy copy, the reset state,
// fw_cfg's contents as the firmware reads them, the table-loader script run the way firmware
// runs it, and bad firmware files.
#include "arch/x86_64/layout.h"
#include "arch/x86_64/testing/kernel_images.h"
#include "base/testing/temporary_directory.h"
#include "devices/fw_cfg/fw_cfg.h"
#include "devices/fw_cfg/table_loader.h"
#include "devices/legacy/power_control.h"
#include "hypervisor/fake/fake_hypervisor.h"
#include "vmm/firmware_boot_loader.h"
#include "vmm/firmware_config.h"
#include "vmm/machine.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>

namespace kvmm {
namespace {

using namespace std::chrono_literals;

constexpr uint8_t POWER_OFF = (POWER_OFF_SLEEP_TYPE << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE_BIT;

std::vector<uint8_t> image_bytes(size_t size) {
    std::vector<uint8_t> bytes(size);
    for (size_t i = 0; i < size; ++i)
        bytes[i] = static_cast<uint8_t>(i * 7 + i / 4096);
    return bytes;
}

void write_file(std::filesystem::path const& path, std::vector<uint8_t> const& bytes) {
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<char const*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

uint64_t le(std::vector<uint8_t> const& bytes, size_t offset, size_t width) {
    uint64_t value = 0;
    for (size_t i = 0; i < width; ++i)
        value |= uint64_t { bytes[offset + i] } << (8 * i);
    return value;
}

class FirmwareTest : public ::testing::Test {
protected:
    void SetUp() override {
        write_file(m_directory / "bios.bin", image_bytes(256 * 1024));
        m_config.firmware_path = m_directory / "bios.bin";
        m_config.memory_size = 64 << 20;
        m_config.console = ConsoleConfig { ConsoleConfig::Kind::None, "" };
    }

    testing::TemporaryDirectory m_directory { "kvmm-firmware-test" };
    VmConfig m_config;
    FakeHypervisor m_hypervisor;
};

TEST_F(FirmwareTest, ImageIsMappedReadOnlyEndingAt4GiBAndKvmPagesMoveBelowIt) {
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    auto* vm = m_hypervisor.last_vm();
    ASSERT_EQ(vm->read_only_regions().size(), 1u);
    auto const& rom = vm->read_only_regions()[0];
    EXPECT_EQ(rom.start, 0x1'0000'0000ull - 256 * 1024);
    auto const expected = image_bytes(256 * 1024);
    ASSERT_EQ(rom.bytes.size(), expected.size());
    EXPECT_EQ(std::memcmp(rom.bytes.data(), expected.data(), expected.size()), 0);
    // KVM's TSS and identity-map pages lie outside the largest firmware window.
    EXPECT_EQ(vm->tss_address(), x86_64::KVM_TSS_ADDRESS);
    EXPECT_EQ(vm->identity_map_address(), x86_64::KVM_IDENTITY_MAP_ADDRESS);
    EXPECT_LE(x86_64::KVM_IDENTITY_MAP_ADDRESS + x86_64::KVM_PRIVATE_PAGES_SIZE, x86_64::FIRMWARE_WINDOW_START);
    EXPECT_GE(x86_64::KVM_IDENTITY_MAP_ADDRESS, x86_64::LAPIC_ADDRESS + 0x1000);
}

TEST_F(FirmwareTest, BootVcpuStartsAtTheResetVectorInRealMode) {
    m_config.vcpu_count = 2;
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    auto* vm = m_hypervisor.last_vm();
    auto const registers = MUST(vm->vcpu(0)->registers());
    auto const special = MUST(vm->vcpu(0)->special_registers());
    EXPECT_EQ(registers.rip, 0xFFF0u);
    EXPECT_EQ(registers.rflags, 0x2u);
    EXPECT_EQ(special.cs.selector, 0xF000);
    EXPECT_EQ(special.cs.base, 0xFFFF'0000u);
    EXPECT_EQ(special.cs.limit, 0xFFFFu);
    EXPECT_EQ(special.cs.base + registers.rip, 0xFFFF'FFF0u) << "the first fetch is the reset vector";
    EXPECT_EQ(special.cr0 & 1, 0u) << "real mode";
    EXPECT_EQ(special.efer, 0u);
    EXPECT_EQ(special.ds.base, 0u);
    EXPECT_EQ(special.ds.limit, 0xFFFFu);
    // The second vCPU keeps its created state: it waits for INIT/SIPI in the hypervisor.
    auto const other = MUST(vm->vcpu(1)->registers());
    EXPECT_EQ(other.rip, 0u);
}

TEST_F(FirmwareTest, LegacyCopyIsTheImagesLast128KiBBelow1MiB) {
    auto loader = MUST(FirmwareBootLoader::create(*m_config.firmware_path));
    auto memory = MUST(GuestMemory::create({ GuestRegionSpec { GuestAddress(0), 2 << 20 } }));
    MUST(loader->load(memory, GuestAddress(0)));
    std::vector<uint8_t> legacy(x86_64::LEGACY_BIOS_SIZE);
    MUST(memory.read(GuestAddress(x86_64::LEGACY_BIOS_START), std::as_writable_bytes(std::span(legacy))));
    auto const image = image_bytes(256 * 1024);
    EXPECT_EQ(std::memcmp(legacy.data(), image.data() + image.size() - legacy.size(), legacy.size()), 0);
    EXPECT_FALSE(loader->load(memory, GuestAddress(0))) << "loaded once per machine";
}

TEST_F(FirmwareTest, SmallImageFillsTheTopOfTheLegacyArea) {
    write_file(m_directory / "small.bin", image_bytes(64 * 1024));
    auto loader = MUST(FirmwareBootLoader::create(m_directory / "small.bin"));
    auto memory = MUST(GuestMemory::create({ GuestRegionSpec { GuestAddress(0), 2 << 20 } }));
    MUST(loader->load(memory, GuestAddress(0)));
    std::vector<uint8_t> top(64 * 1024);
    MUST(memory.read(GuestAddress(0x100000 - top.size()), std::as_writable_bytes(std::span(top))));
    EXPECT_EQ(top, image_bytes(64 * 1024));
    EXPECT_EQ(loader->image_start(), 0x1'0000'0000ull - 64 * 1024);
}

TEST_F(FirmwareTest, BadFirmwareFilesAreRefusedNamingTheProblem) {
    struct Case {
        std::string name;
        std::vector<uint8_t> bytes;
        std::string expected;
    };
    std::vector<Case> const cases {
        { "empty.bin", {}, "is empty" },
        { "odd.bin", std::vector<uint8_t>(4096 + 512), "not a multiple of 4 KiB" },
        { "huge.bin", std::vector<uint8_t>((16 << 20) + 4096), "more than the limit" },
    };
    for (auto const& test : cases) {
        write_file(m_directory / test.name, test.bytes);
        m_config.firmware_path = m_directory / test.name;
        auto machine = Machine::create(m_config, m_hypervisor);
        ASSERT_FALSE(machine) << test.name;
        EXPECT_NE(machine.error().message().find(test.expected), std::string::npos) << machine.error().message();
        EXPECT_NE(machine.error().message().find(test.name), std::string::npos) << machine.error().message();
    }
    m_config.firmware_path = m_directory / "missing.bin";
    auto missing = Machine::create(m_config, m_hypervisor);
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find("missing.bin"), std::string::npos) << missing.error().message();
}

TEST_F(FirmwareTest, NoKernelAndNoFirmwareIsRefused) {
    m_config.firmware_path.reset();
    auto machine = Machine::create(m_config, m_hypervisor);
    ASSERT_FALSE(machine);
    EXPECT_NE(machine.error().message().find("--firmware"), std::string::npos) << machine.error().message();
}

TEST_F(FirmwareTest, KernelWithFirmwareMustBeABzImage) {
    write_file(m_directory / "vmlinux", std::vector<uint8_t>(8192, 0x90));
    m_config.kernel_path = m_directory / "vmlinux";
    auto machine = Machine::create(m_config, m_hypervisor);
    ASSERT_FALSE(machine);
    EXPECT_NE(machine.error().message().find("not a bzImage"), std::string::npos) << machine.error().message();
}

TEST_F(FirmwareTest, RestoringAFirmwareMachineIsRefused) {
    auto machine = Machine::create_restored(m_config, m_hypervisor, RestoreSource {});
    ASSERT_FALSE(machine);
    EXPECT_NE(machine.error().message().find("firmware"), std::string::npos) << machine.error().message();
}

// The guest reads fw_cfg through the ports: the CPU count it was configured with. The script
// ends after the read (the fake then reports a shutdown), so the read's data stays inspectable.
TEST_F(FirmwareTest, GuestReadsTheCpuCountThroughFwCfgPorts) {
    m_config.vcpu_count = 3;
    m_hypervisor.add_vcpu_script(0, { ScriptedExit {
                                          ScriptedExit::Kind::IoOut, fw_cfg::PORT_BASE, { fw_cfg::NB_CPUS, 0 } },
                                      ScriptedExit { ScriptedExit::Kind::IoIn, fw_cfg::PORT_BASE + 1, { 0xff } } });
    // The other vCPUs wait (for SIPI, on real hardware) until the machine stops.
    m_hypervisor.add_vcpu_script(1, { ScriptedExit { ScriptedExit::Kind::WaitForKick } });
    m_hypervisor.add_vcpu_script(2, { ScriptedExit { ScriptedExit::Kind::WaitForKick } });
    auto machine = MUST(Machine::create(m_config, m_hypervisor));
    std::vector<std::string> ids;
    for (auto const& entry : machine->devices())
        ids.push_back(entry.id);
    EXPECT_NE(std::find(ids.begin(), ids.end(), "fw-cfg"), ids.end());
    auto stopped = std::async(std::launch::async, [&] { return machine->run(); });
    ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(m_hypervisor.last_vm()->vcpu(0)->last_read_data(), (std::vector<uint8_t> { 3 }));
}

// Items as populate_fw_cfg leaves them, read back through the device's own ports.
class FirmwareConfigTest : public ::testing::Test {
protected:
    static GuestMemory make_memory() {
        return MUST(GuestMemory::create({ GuestRegionSpec { GuestAddress(0), 64 << 20 } }));
    }
    std::vector<uint8_t> read_item(uint16_t key, size_t length) {
        std::array<uint8_t, 2> selector { static_cast<uint8_t>(key), static_cast<uint8_t>(key >> 8) };
        m_device.write(fw_cfg::SELECTOR_OFFSET, selector);
        std::vector<uint8_t> bytes(length);
        for (auto& byte : bytes) {
            std::array<uint8_t, 1> one {};
            m_device.read(fw_cfg::DATA_OFFSET, one);
            byte = one[0];
        }
        return bytes;
    }
    // The file directory as the firmware sees it: name -> (key, size).
    std::map<std::string, std::pair<uint16_t, uint32_t>> directory() {
        auto const count_bytes = read_item(fw_cfg::FILE_DIR, 4);
        uint32_t const count = (uint32_t { count_bytes[0] } << 24) | (uint32_t { count_bytes[1] } << 16) |
                               (uint32_t { count_bytes[2] } << 8) | count_bytes[3];
        auto const bytes = read_item(fw_cfg::FILE_DIR, 4 + count * 64);
        std::map<std::string, std::pair<uint16_t, uint32_t>> files;
        for (uint32_t i = 0; i < count; ++i) {
            uint8_t const* entry = bytes.data() + 4 + i * 64;
            uint32_t const size =
                (uint32_t { entry[0] } << 24) | (uint32_t { entry[1] } << 16) | (uint32_t { entry[2] } << 8) | entry[3];
            auto const key = static_cast<uint16_t>((entry[4] << 8) | entry[5]);
            files[std::string(reinterpret_cast<char const*>(entry + 8))] = { key, size };
        }
        return files;
    }
    std::vector<uint8_t> read_file_item(std::string const& name) {
        auto const files = directory();
        auto found = files.find(name);
        EXPECT_NE(found, files.end()) << name;
        if (found == files.end())
            return {};
        return read_item(found->second.first, found->second.second);
    }
    FirmwareConfig config() {
        FirmwareConfig firmware;
        firmware.vcpu_count = 2;
        firmware.ram_size = 64 << 20;
        firmware.memory_map = x86_64::firmware_memory_map(m_memory);
        x86_64::AcpiConfig acpi;
        acpi.vcpu_count = 2;
        acpi.virtio_devices.push_back(x86_64::AcpiVirtioMmioDevice { x86_64::VIRTIO_MMIO_BASE, 0x1000, 5 });
        firmware.acpi = MUST(x86_64::build_acpi_blobs(acpi));
        firmware.boot_order = { virtio_mmio_boot_path(x86_64::VIRTIO_MMIO_BASE) };
        return firmware;
    }

    GuestMemory m_memory { make_memory() };
    FwCfg m_device { m_memory };
};

TEST_F(FirmwareConfigTest, CpuCountsNoGraphicsAndRamSizeAreSet) {
    MUST(populate_fw_cfg(m_device, config()));
    EXPECT_EQ(read_item(fw_cfg::NB_CPUS, 2), (std::vector<uint8_t> { 2, 0 }));
    EXPECT_EQ(read_item(fw_cfg::MAX_CPUS, 2), (std::vector<uint8_t> { 2, 0 }));
    EXPECT_EQ(read_item(fw_cfg::NOGRAPHIC, 2), (std::vector<uint8_t> { 1, 0 }));
    EXPECT_EQ(le(read_item(fw_cfg::RAM_SIZE, 8), 0, 8), 64u << 20);
}

TEST_F(FirmwareConfigTest, E820ListsEveryRamRegionAndKvmsReservedPages) {
    MUST(populate_fw_cfg(m_device, config()));
    auto const e820 = read_file_item("etc/e820");
    ASSERT_EQ(e820.size(), 2u * 20);
    EXPECT_EQ(le(e820, 0, 8), 0u);
    EXPECT_EQ(le(e820, 8, 8), 64u << 20);
    EXPECT_EQ(le(e820, 16, 4), 1u); // RAM
    EXPECT_EQ(le(e820, 20, 8), x86_64::KVM_IDENTITY_MAP_ADDRESS);
    EXPECT_EQ(le(e820, 28, 8), x86_64::KVM_PRIVATE_PAGES_SIZE);
    EXPECT_EQ(le(e820, 36, 4), 2u); // reserved
}

TEST_F(FirmwareConfigTest, BootOrderNamesTheDiskBySeaBiosDevicePath) {
    MUST(populate_fw_cfg(m_device, config()));
    auto const order = read_file_item("bootorder");
    EXPECT_EQ(std::string(order.begin(), order.end()), "/virtio-mmio@00000000d0000000/*");
}

// A kernel given with the firmware: split as QEMU splits a bzImage for firmware, (setup_sects +
// 1) sectors of real-mode setup, then the protected-mode kernel; initrd and command line
// (NUL-terminated) beside them.
TEST_F(FirmwareConfigTest, KernelInitrdAndCommandLineGoToTheirItems) {
    auto firmware = config();
    firmware.kernel = FirmwareKernel { x86_64::testing::make_bzimage(0x020f, 8192),
                                       std::vector<std::byte>(100, std::byte { 0x42 }), "console=ttyS0" };
    MUST(populate_fw_cfg(m_device, std::move(firmware)));
    EXPECT_EQ(le(read_item(fw_cfg::SETUP_SIZE, 4), 0, 4), 3u * 512);
    EXPECT_EQ(le(read_item(fw_cfg::KERNEL_SIZE, 4), 0, 4), 8192u);
    auto const setup = read_item(fw_cfg::SETUP_DATA, 3 * 512);
    EXPECT_EQ(le(setup, 0x202, 4), 0x53726448u) << "the setup part starts the image";
    EXPECT_EQ(read_item(fw_cfg::KERNEL_DATA, 1), (std::vector<uint8_t> { 0xe9 })) << "the 32-bit kernel's first byte";
    EXPECT_EQ(le(read_item(fw_cfg::INITRD_SIZE, 4), 0, 4), 100u);
    EXPECT_EQ(read_item(fw_cfg::INITRD_DATA, 2), (std::vector<uint8_t> { 0x42, 0x42 }));
    EXPECT_EQ(le(read_item(fw_cfg::CMDLINE_SIZE, 4), 0, 4), 14u);
    auto const cmdline = read_item(fw_cfg::CMDLINE_DATA, 14);
    EXPECT_EQ(std::string(cmdline.begin(), cmdline.end()), std::string("console=ttyS0", 14));
}

TEST_F(FirmwareConfigTest, NoKernelMeansNoKernelItems) {
    MUST(populate_fw_cfg(m_device, config()));
    EXPECT_TRUE(m_device.item(fw_cfg::KERNEL_SIZE).empty());
    EXPECT_TRUE(m_device.item(fw_cfg::CMDLINE_DATA).empty());
}

// Runs the table-loader script the way firmware does (SeaBIOS romfile_loader.c): places each
// file, adds the placed addresses to the pointers, fixes the checksums, and then checks that
// the result is a valid, linked set of ACPI tables.
TEST_F(FirmwareConfigTest, TableLoaderScriptInstallsLinkedTablesWithValidChecksums) {
    MUST(populate_fw_cfg(m_device, config()));
    auto const script = read_file_item("etc/table-loader");
    ASSERT_EQ(script.size() % TableLoader::COMMAND_SIZE, 0u);
    ASSERT_GT(script.size(), 0u);
    std::map<std::string, std::vector<uint8_t>> files;
    std::map<std::string, uint64_t> addresses;
    uint64_t next_high = 0x7f00000; // where "the firmware" puts high allocations
    for (size_t at = 0; at < script.size(); at += TableLoader::COMMAND_SIZE) {
        uint8_t const* command = script.data() + at;
        auto const kind = le(script, at, 4);
        auto const name = std::string(reinterpret_cast<char const*>(command + 4));
        if (kind == TableLoader::COMMAND_ALLOCATE) {
            files[name] = read_file_item(name);
            auto const alignment = le(script, at + 60, 4);
            auto const zone = command[64];
            uint64_t const address = zone == 2 ? 0xf5a40 : next_high;
            EXPECT_EQ(address % alignment, 0u) << name;
            addresses[name] = address;
            next_high += 0x10000;
        } else if (kind == TableLoader::COMMAND_ADD_POINTER) {
            auto const source = std::string(reinterpret_cast<char const*>(command + 60));
            auto const offset = le(script, at + 116, 4);
            auto const size = command[120];
            auto& destination = files.at(name);
            uint64_t value = le(destination, offset, size) + addresses.at(source);
            for (size_t i = 0; i < size; ++i)
                destination[offset + i] = static_cast<uint8_t>(value >> (8 * i));
        } else if (kind == TableLoader::COMMAND_ADD_CHECKSUM) {
            auto const offset = le(script, at + 60, 4);
            auto const start = le(script, at + 64, 4);
            auto const length = le(script, at + 68, 4);
            auto& file = files.at(name);
            uint8_t sum = 0;
            for (size_t i = start; i < start + length; ++i)
                sum = static_cast<uint8_t>(sum + file[i]);
            file[offset] = static_cast<uint8_t>(file[offset] - sum);
        } else {
            FAIL() << "unknown command " << kind;
        }
    }
    ASSERT_EQ(files.size(), 2u);
    auto const& rsdp = files.at("etc/acpi/rsdp");
    auto const& tables = files.at("etc/acpi/tables");
    uint64_t const tables_address = addresses.at("etc/acpi/tables");
    auto sum = [](std::vector<uint8_t> const& bytes, size_t start, size_t length) {
        uint8_t total = 0;
        for (size_t i = start; i < start + length; ++i)
            total = static_cast<uint8_t>(total + bytes[i]);
        return total;
    };
    EXPECT_EQ(std::string(rsdp.begin(), rsdp.begin() + 8), "RSD PTR ");
    EXPECT_EQ(sum(rsdp, 0, 20), 0) << "ACPI 1.0 checksum";
    EXPECT_EQ(sum(rsdp, 0, 36), 0) << "extended checksum";
    // A table at `address` in the installed blob: its signature, with a zero checksum.
    auto table_at = [&](uint64_t address, char const* signature) -> size_t {
        EXPECT_GE(address, tables_address);
        size_t const offset = address - tables_address;
        EXPECT_LT(offset + 36, tables.size() + 1);
        EXPECT_EQ(std::string(tables.begin() + static_cast<long>(offset),
                              tables.begin() + static_cast<long>(offset) + 4),
                  signature);
        auto const length = le(tables, offset + 4, 4);
        EXPECT_EQ(sum(tables, offset, length), 0) << signature;
        return offset;
    };
    auto const xsdt = table_at(le(rsdp, 24, 8), "XSDT");
    auto const fadt = table_at(le(tables, xsdt + 36, 8), "FACP");
    table_at(le(tables, xsdt + 44, 8), "APIC");
    table_at(le(tables, fadt + 140, 8), "DSDT");
    EXPECT_EQ(le(tables, fadt + 40, 4), le(tables, fadt + 140, 8)) << "DSDT and X_DSDT agree";
}

} // namespace
} // namespace kvmm

// KVM tier: SeaBIOS (Debian's microvm build) boots under kvmm --firmware from a virtio-mmio
// disk whose boot sector the test writes: the sector prints a marker on COM1 and powers the
// machine off through kvmm's ACPI sleep control port. The test sees the SeaBIOS banner, then
// the marker, then a clean exit. The firmware runs in real mode, which this workplace's
// /dev/kvm emulates instruction by instruction: the elapsed time is printed for the record.
#include "child_process.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace kvmm::testing {
namespace {

constexpr char SEABIOS_MICROVM[] = "/usr/share/seabios/bios-microvm.bin";
constexpr char MARKER[] = "KVMM-MBR-BOOTED";

// A 512-byte MBR boot sector (loaded by the BIOS at 0000:7C00, entered in real mode):
//   cli; xor ax,ax; mov ds,ax; mov si,0x7C1C; mov dx,0x3F8
//   next: lodsb; test al,al; jz done; out dx,al; jmp next
//   done: mov dx,0x600; mov al,0x34; out dx,al      ; SLP_TYP 5 | SLP_EN: ACPI S5, power off
//   halt: hlt; jmp halt
// followed by the message at offset 0x1C and the boot signature 55 AA at 510.
std::vector<uint8_t> boot_sector() {
    std::vector<uint8_t> sector(512, 0);
    std::array<uint8_t, 28> const code { 0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0xBE, 0x1C, 0x7C, 0xBA, 0xF8,
                                         0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8, 0xBA,
                                         0x00, 0x06, 0xB0, 0x34, 0xEE, 0xF4, 0xEB, 0xFD };
    std::copy(code.begin(), code.end(), sector.begin());
    std::string const message = std::string(MARKER) + "\r\n";
    std::copy(message.begin(), message.end(), sector.begin() + 0x1C); // NUL-terminated by the zeros
    sector[510] = 0x55;
    sector[511] = 0xAA;
    return sector;
}

class FirmwareBootTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto const reason = kvm_unavailable_reason();
        if (!reason.empty())
            GTEST_SKIP() << "KVM tier skipped: " << reason;
        // Not a skip: tools/install-deps.sh installs the seabios package, so its absence is a
        // broken test machine.
        ASSERT_TRUE(std::filesystem::exists(SEABIOS_MICROVM))
            << SEABIOS_MICROVM << " is missing: install the seabios package (tools/install-deps.sh)";
        char directory_template[] = "/tmp/kvmm-firmware-XXXXXX";
        ASSERT_NE(::mkdtemp(directory_template), nullptr);
        m_directory = directory_template;
        m_disk = m_directory / "boot.img";
        auto sector = boot_sector();
        sector.resize(1 << 20, 0); // a 1 MiB raw image
        std::ofstream(m_disk, std::ios::binary)
            .write(reinterpret_cast<char const*>(sector.data()), static_cast<std::streamsize>(sector.size()));
    }
    void TearDown() override {
        if (!m_directory.empty())
            std::filesystem::remove_all(m_directory);
    }

    ProcessResult boot(std::vector<std::string> extra = {}) {
        std::vector<std::string> arguments {
            kvmm_binary(), "--firmware", SEABIOS_MICROVM, "--disk", "path=" + m_disk.string(), "--memory", "128M"
        };
        arguments.insert(arguments.end(), extra.begin(), extra.end());
        return run_process(arguments, {}, std::chrono::seconds(60));
    }

    std::filesystem::path m_directory;
    std::filesystem::path m_disk;
};

void expect_banner_then_marker(ProcessResult const& result) {
    EXPECT_FALSE(result.timed_out) << result.standard_output << result.standard_error;
    EXPECT_EQ(result.signal, 0);
    EXPECT_EQ(result.exit_status, 0) << result.standard_error;
    auto const banner = result.standard_output.find("SeaBIOS (version");
    auto const marker = result.standard_output.find(MARKER);
    EXPECT_NE(banner, std::string::npos) << result.standard_output;
    EXPECT_NE(marker, std::string::npos) << result.standard_output;
    EXPECT_LT(banner, marker) << result.standard_output;
}

TEST_F(FirmwareBootTest, SeaBiosBootsTheBootSectorOfAVirtioMmioDisk) {
    auto const result = boot();
    expect_banner_then_marker(result);
    std::cout << "SeaBIOS to boot-sector power-off, 1 vCPU: " << result.elapsed.count() << " ms\n";
}

// SeaBIOS starts the second vCPU itself (INIT/SIPI through the LAPIC) to count it. Its debug
// log (port 0x402, in kvmm's log at debug level) shows what it found through fw_cfg: the DMA
// interface, the memory map, the boot order, the ACPI tables the table-loader installed, the
// disk found through the DSDT, and both vCPUs.
TEST_F(FirmwareBootTest, SeaBiosFindsFwCfgTheTablesTheDiskAndBothVcpus) {
    auto const result = boot({ "--cpus", "2", "--log-level", "debug" });
    expect_banner_then_marker(result);
    std::cout << "SeaBIOS to boot-sector power-off, 2 vCPUs, debug log on: " << result.elapsed.count() << " ms\n";
    for (char const* line :
         { "firmware: Found QEMU fw_cfg", "firmware: QEMU fw_cfg DMA interface supported",
           "firmware: qemu/e820: addr 0x0000000000000000 len 0x0000000008000000 [RAM]",
           "firmware: 1: /virtio-mmio@00000000d0000000/*", "(via xsdt)",
           "firmware: ACPI: virtio-mmio device V000 at 0xd0000000", "firmware: found virtio-blk-mmio at 0xd0000000",
           "firmware: Found 2 cpu(s)", "firmware: sercon: using ioport 0x3f8" })
        EXPECT_NE(result.standard_error.find(line), std::string::npos) << line << "\n" << result.standard_error;
}

// A disk that is not bootable (no 55 AA signature) is reported by the firmware, not by kvmm:
// SeaBIOS says so on the console and waits to retry; kvmm keeps running until stopped.
TEST_F(FirmwareBootTest, NonBootableDiskIsReportedByTheFirmware) {
    std::vector<uint8_t> zeros(1 << 20, 0);
    std::ofstream(m_disk, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<char const*>(zeros.data()), static_cast<std::streamsize>(zeros.size()));
    std::vector<std::string> arguments {
        kvmm_binary(), "--firmware", SEABIOS_MICROVM, "--disk", "path=" + m_disk.string(), "--memory", "128M"
    };
    auto const result = run_process(arguments, {}, std::chrono::seconds(15));
    EXPECT_TRUE(result.timed_out) << "kvmm keeps running while the firmware retries: " << result.standard_error;
    EXPECT_NE(result.standard_output.find("No bootable device"), std::string::npos) << result.standard_output;
    EXPECT_EQ(result.standard_output.find(MARKER), std::string::npos);
}

} // namespace
} // namespace kvmm::testing

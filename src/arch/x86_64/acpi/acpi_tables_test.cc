#include "arch/x86_64/acpi/acpi_tables.h"

#include "arch/x86_64/layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace kvmm::x86_64 {
namespace {

class AcpiTablesTest : public ::testing::Test {
protected:
    std::vector<uint8_t> read_bytes(uint64_t address, size_t length) {
        std::vector<uint8_t> bytes(length);
        MUST(m_memory.read(GuestAddress(address), std::as_writable_bytes(std::span(bytes))));
        return bytes;
    }
    template <typename T>
    T read(uint64_t address) {
        return MUST(m_memory.read_obj<T>(GuestAddress(address)));
    }
    // Reads a whole table, checks its checksum, returns it.
    std::vector<uint8_t> table_at(uint64_t address, char const* signature) {
        auto const length = read<uint32_t>(address + 4);
        auto bytes = read_bytes(address, length);
        EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 4), signature);
        uint8_t sum = 0;
        for (auto byte : bytes)
            sum = static_cast<uint8_t>(sum + byte);
        EXPECT_EQ(sum, 0) << signature << " checksum";
        return bytes;
    }
    struct Tables {
        std::vector<uint8_t> fadt, madt, dsdt;
    };
    Tables write_and_find(AcpiConfig const& config) {
        auto const rsdp = MUST(write_acpi_tables(m_memory, config)).value();
        auto const rsdp_bytes = read_bytes(rsdp, 36);
        EXPECT_EQ(std::memcmp(rsdp_bytes.data(), "RSD PTR ", 8), 0);
        uint8_t sum20 = 0, sum36 = 0;
        for (size_t i = 0; i < 36; ++i) {
            sum36 = static_cast<uint8_t>(sum36 + rsdp_bytes[i]);
            if (i < 20)
                sum20 = static_cast<uint8_t>(sum20 + rsdp_bytes[i]);
        }
        EXPECT_EQ(sum20, 0);
        EXPECT_EQ(sum36, 0);
        EXPECT_EQ(rsdp_bytes[15], 2);
        uint64_t xsdt_address = 0;
        std::memcpy(&xsdt_address, rsdp_bytes.data() + 24, 8);
        auto const xsdt = table_at(xsdt_address, "XSDT");
        EXPECT_EQ(xsdt.size(), 36u + 16u);
        uint64_t fadt_address = 0, madt_address = 0, dsdt_address = 0;
        std::memcpy(&fadt_address, xsdt.data() + 36, 8);
        std::memcpy(&madt_address, xsdt.data() + 44, 8);
        Tables tables;
        tables.fadt = table_at(fadt_address, "FACP");
        std::memcpy(&dsdt_address, tables.fadt.data() + 140, 8);
        tables.madt = table_at(madt_address, "APIC");
        tables.dsdt = table_at(dsdt_address, "DSDT");
        for (uint64_t address : { xsdt_address, fadt_address, madt_address, dsdt_address }) {
            EXPECT_GE(address, ACPI_TABLES_START);
            EXPECT_LT(address, ACPI_TABLES_END);
        }
        return tables;
    }
    static bool contains(std::vector<uint8_t> const& haystack, std::vector<uint8_t> const& needle) {
        return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) != haystack.end();
    }

    GuestMemory m_memory = [] { return MUST(GuestMemory::create({ { GuestAddress(0), 64 * MiB } })); }();
};

TEST_F(AcpiTablesTest, FadtIsHardwareReducedWithSleepAndResetRegisters) {
    auto const tables = write_and_find(AcpiConfig {});
    auto const& fadt = tables.fadt;
    EXPECT_EQ(fadt.size(), 276u);
    EXPECT_EQ(fadt[8], 6);
    uint32_t flags = 0;
    std::memcpy(&flags, fadt.data() + 112, 4);
    EXPECT_TRUE(flags & (1u << 20)) << "HW_REDUCED_ACPI";
    EXPECT_TRUE(flags & (1u << 10)) << "RESET_REG_SUP";
    EXPECT_EQ(fadt[116], 1); // reset register in system I/O space
    uint64_t reset_port = 0, sleep_port = 0;
    std::memcpy(&reset_port, fadt.data() + 120, 8);
    std::memcpy(&sleep_port, fadt.data() + 248, 8);
    EXPECT_EQ(reset_port, 0x600u);
    EXPECT_EQ(sleep_port, 0x600u);
    EXPECT_EQ(fadt[128], 0x01);
}

TEST_F(AcpiTablesTest, MadtListsOneLapicPerVcpuAndTheIoapic) {
    for (uint32_t count : { 1u, 2u, 4u, 64u, 255u, 300u }) {
        AcpiConfig config;
        config.vcpu_count = count;
        auto const madt = write_and_find(config).madt;
        uint32_t lapics = 0, x2apics = 0, ioapics = 0, overrides = 0;
        std::vector<uint32_t> ids;
        for (size_t offset = 44; offset + 2 <= madt.size();) {
            uint8_t const type = madt[offset];
            uint8_t const length = madt[offset + 1];
            ASSERT_GE(length, 2);
            if (type == 0) {
                ++lapics;
                ids.push_back(madt[offset + 3]);
            } else if (type == 9) {
                ++x2apics;
                uint32_t id = 0;
                std::memcpy(&id, madt.data() + offset + 4, 4);
                ids.push_back(id);
            } else if (type == 1) {
                ++ioapics;
            } else if (type == 2) {
                ++overrides;
                EXPECT_EQ(madt[offset + 3], 0); // IRQ 0
            }
            offset += length;
        }
        EXPECT_EQ(lapics + x2apics, count);
        for (uint32_t i = 0; i < count; ++i)
            EXPECT_EQ(ids[i], i);
        EXPECT_EQ(ioapics, 1u);
        EXPECT_EQ(overrides, 1u);
    }
}

TEST_F(AcpiTablesTest, DsdtHasCom1SoftOffAndVirtioDevices) {
    AcpiConfig config;
    config.virtio_devices.push_back({ 0xd0000000, 0x1000, 5 });
    config.virtio_devices.push_back({ 0xd0001000, 0x1000, 6 });
    auto const dsdt = write_and_find(config).dsdt;
    EXPECT_TRUE(contains(dsdt, { 0x0c, 0x41, 0xd0, 0x05, 0x01 })) << "EISAID PNP0501";
    EXPECT_TRUE(contains(dsdt, { '_', 'S', '5', '_', 0x12 })) << "\\_S5_ package";
    EXPECT_TRUE(contains(dsdt, { 'L', 'N', 'R', 'O', '0', '0', '0', '5' }));
    EXPECT_TRUE(contains(dsdt, { 'V', '0', '0', '1' }));
}

TEST_F(AcpiTablesTest, PvpanicDeviceIsDeclaredOnlyWhenPresent) {
    std::vector<uint8_t> const hid { 'Q', 'E', 'M', 'U', '0', '0', '0', '1' };
    EXPECT_FALSE(contains(write_and_find(AcpiConfig {}).dsdt, hid));
    AcpiConfig config;
    config.pvpanic_address = 0xcffff000;
    auto const dsdt = write_and_find(config).dsdt;
    EXPECT_TRUE(contains(dsdt, hid));
    EXPECT_TRUE(contains(dsdt, { 0x86, 0x09, 0x00, 0x01, 0x00, 0xf0, 0xff, 0xcf, 0x01, 0x00, 0x00, 0x00 }))
        << "Memory32Fixed at 0xcffff000, length 1";
}

TEST_F(AcpiTablesTest, TooManyDevicesFailCleanly) {
    AcpiConfig config;
    for (uint32_t i = 0; i < 5000; ++i)
        config.virtio_devices.push_back({ 0xd0000000 + i * 0x1000ull, 0x1000, 5 });
    auto result = write_acpi_tables(m_memory, config);
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("do not fit"), std::string::npos);
}

} // namespace
} // namespace kvmm::x86_64

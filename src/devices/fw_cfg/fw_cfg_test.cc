#include "devices/fw_cfg/fw_cfg.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

namespace kvmm {
namespace {

constexpr uint64_t MEMORY_SIZE = 1 << 20;
constexpr uint64_t ACCESS_ADDRESS = 0x1000; // where tests put the FWCfgDmaAccess
constexpr uint64_t BUFFER_ADDRESS = 0x2000;

class FwCfgTest : public ::testing::Test {
protected:
    void select(uint16_t key) {
        std::array<uint8_t, 2> bytes { static_cast<uint8_t>(key), static_cast<uint8_t>(key >> 8) };
        m_device.write(fw_cfg::SELECTOR_OFFSET, bytes);
    }
    uint8_t data_byte() {
        std::array<uint8_t, 1> byte {};
        m_device.read(fw_cfg::DATA_OFFSET, byte);
        return byte[0];
    }
    std::vector<uint8_t> read_ports(uint16_t key, size_t length) {
        select(key);
        std::vector<uint8_t> bytes;
        for (size_t i = 0; i < length; ++i)
            bytes.push_back(data_byte());
        return bytes;
    }
    static void put_be32(uint8_t* bytes, uint32_t value) {
        for (int i = 0; i < 4; ++i)
            bytes[i] = static_cast<uint8_t>(value >> (24 - 8 * i));
    }
    // Writes a FWCfgDmaAccess at ACCESS_ADDRESS and starts it through the address register,
    // as SeaBIOS does (high half, then low half, each as cpu_to_be32); returns the control
    // word the device wrote back.
    uint32_t dma(uint32_t control, uint32_t length, uint64_t address, uint64_t access = ACCESS_ADDRESS) {
        std::array<uint8_t, 16> request {};
        put_be32(request.data(), control);
        put_be32(request.data() + 4, length);
        put_be32(request.data() + 8, static_cast<uint32_t>(address >> 32));
        put_be32(request.data() + 12, static_cast<uint32_t>(address));
        (void)m_memory.write(GuestAddress(access), std::as_bytes(std::span(request)));
        std::array<uint8_t, 4> high {};
        std::array<uint8_t, 4> low {};
        put_be32(high.data(), static_cast<uint32_t>(access >> 32));
        put_be32(low.data(), static_cast<uint32_t>(access));
        m_device.write(fw_cfg::DMA_OFFSET, high);
        m_device.write(fw_cfg::DMA_OFFSET + 4, low);
        std::array<uint8_t, 4> result {};
        if (!m_memory.read(GuestAddress(access), std::as_writable_bytes(std::span(result))))
            return 0xdeadbeef;
        return (uint32_t { result[0] } << 24) | (uint32_t { result[1] } << 16) | (uint32_t { result[2] } << 8) |
               result[3];
    }
    std::vector<uint8_t> guest_bytes(uint64_t address, size_t length) {
        std::vector<uint8_t> bytes(length);
        EXPECT_TRUE(m_memory.read(GuestAddress(address), std::as_writable_bytes(std::span(bytes))));
        return bytes;
    }
    static uint32_t select_read(uint16_t key) {
        return (uint32_t { key } << 16) | fw_cfg::DMA_SELECT | fw_cfg::DMA_READ;
    }

    static GuestMemory make_memory() {
        return MUST(GuestMemory::create({ GuestRegionSpec { GuestAddress(0), MEMORY_SIZE } }));
    }

    GuestMemory m_memory { make_memory() };
    FwCfg m_device { m_memory };
};

TEST_F(FwCfgTest, SignatureReadsQemuThroughTheDataPort) {
    EXPECT_EQ(read_ports(fw_cfg::SIGNATURE, 4), (std::vector<uint8_t> { 'Q', 'E', 'M', 'U' }));
}

TEST_F(FwCfgTest, IdAnnouncesTheTraditionalAndDmaInterfaces) {
    EXPECT_EQ(read_ports(fw_cfg::ID, 4), (std::vector<uint8_t> { 0x03, 0, 0, 0 }));
}

TEST_F(FwCfgTest, ReadsPastAnItemsEndAndOfUnknownKeysGiveZeros) {
    EXPECT_EQ(read_ports(fw_cfg::SIGNATURE, 6), (std::vector<uint8_t> { 'Q', 'E', 'M', 'U', 0, 0 }));
    EXPECT_EQ(read_ports(0x1234, 3), (std::vector<uint8_t> { 0, 0, 0 }));
}

TEST_F(FwCfgTest, SelectingAgainRewindsToTheItemsStart) {
    select(fw_cfg::SIGNATURE);
    EXPECT_EQ(data_byte(), 'Q');
    EXPECT_EQ(data_byte(), 'E');
    select(fw_cfg::SIGNATURE);
    EXPECT_EQ(data_byte(), 'Q');
}

TEST_F(FwCfgTest, IntegerItemsAreLittleEndian) {
    MUST(m_device.add_u16(fw_cfg::NB_CPUS, 3));
    MUST(m_device.add_u16(fw_cfg::MAX_CPUS, 0x102));
    MUST(m_device.add_u16(fw_cfg::NOGRAPHIC, 1));
    MUST(m_device.add_u64(fw_cfg::RAM_SIZE, 0x0102030405060708ull));
    EXPECT_EQ(read_ports(fw_cfg::NB_CPUS, 2), (std::vector<uint8_t> { 3, 0 }));
    EXPECT_EQ(read_ports(fw_cfg::MAX_CPUS, 2), (std::vector<uint8_t> { 2, 1 }));
    EXPECT_EQ(read_ports(fw_cfg::NOGRAPHIC, 2), (std::vector<uint8_t> { 1, 0 }));
    EXPECT_EQ(read_ports(fw_cfg::RAM_SIZE, 8), (std::vector<uint8_t> { 8, 7, 6, 5, 4, 3, 2, 1 }));
}

TEST_F(FwCfgTest, FileDirectoryListsFilesSortedByNameWithBigEndianFields) {
    auto const zebra = MUST(m_device.add_file("zebra", std::vector<uint8_t>(300, 1)));
    auto const alpha = MUST(m_device.add_file("etc/alpha", { 1, 2, 3 }));
    EXPECT_EQ(zebra, fw_cfg::FILE_FIRST);
    EXPECT_EQ(alpha, fw_cfg::FILE_FIRST + 1);
    auto const directory = read_ports(fw_cfg::FILE_DIR, 4 + 2 * 64);
    EXPECT_EQ((std::vector<uint8_t>(directory.begin(), directory.begin() + 4)), (std::vector<uint8_t> { 0, 0, 0, 2 }));
    // First entry: "etc/alpha", 3 bytes, key 0x21.
    uint8_t const* first = directory.data() + 4;
    EXPECT_EQ((std::vector<uint8_t>(first, first + 8)), (std::vector<uint8_t> { 0, 0, 0, 3, 0, 0x21, 0, 0 }));
    EXPECT_EQ(std::string(reinterpret_cast<char const*>(first + 8)), "etc/alpha");
    uint8_t const* second = first + 64;
    EXPECT_EQ((std::vector<uint8_t>(second, second + 8)), (std::vector<uint8_t> { 0, 0, 0x01, 0x2c, 0, 0x20, 0, 0 }));
    EXPECT_EQ(std::string(reinterpret_cast<char const*>(second + 8)), "zebra");
    EXPECT_EQ(read_ports(alpha, 3), (std::vector<uint8_t> { 1, 2, 3 }));
}

TEST_F(FwCfgTest, BadFileNamesAndKeysAreRefusedNamingThem) {
    auto const empty = m_device.add_file("", {});
    ASSERT_FALSE(empty);
    auto const long_name = m_device.add_file(std::string(56, 'x'), {});
    ASSERT_FALSE(long_name);
    EXPECT_NE(long_name.error().message().find("55"), std::string::npos) << long_name.error().message();
    MUST(m_device.add_file("bootorder", {}));
    auto const duplicate = m_device.add_file("bootorder", {});
    ASSERT_FALSE(duplicate);
    EXPECT_NE(duplicate.error().message().find("bootorder"), std::string::npos);
    auto const directory_key = m_device.add_item(fw_cfg::FILE_DIR, {});
    ASSERT_FALSE(directory_key);
    EXPECT_NE(directory_key.error().message().find("0x19"), std::string::npos) << directory_key.error().message();
    EXPECT_FALSE(m_device.add_item(fw_cfg::FILE_FIRST + 5, {}));
    EXPECT_TRUE(m_device.add_item(fw_cfg::ARCH_E820_TABLE, { 0, 0, 0, 0 })); // architecture keys are fixed items
}

TEST_F(FwCfgTest, DmaAddressRegisterReadsAsTheSignature) {
    std::array<uint8_t, 4> high {};
    std::array<uint8_t, 4> low {};
    m_device.read(fw_cfg::DMA_OFFSET, high);
    m_device.read(fw_cfg::DMA_OFFSET + 4, low);
    EXPECT_EQ(std::string(high.begin(), high.end()) + std::string(low.begin(), low.end()), "QEMU CFG");
}

TEST_F(FwCfgTest, DmaSelectAndReadCopiesTheItemAndZeroFillsPastItsEnd) {
    MUST(m_device.add_file("etc/data", { 10, 20, 30 }));
    std::vector<uint8_t> const filler(6, 0xee);
    (void)m_memory.write(GuestAddress(BUFFER_ADDRESS), std::as_bytes(std::span(filler)));
    EXPECT_EQ(dma(select_read(fw_cfg::FILE_FIRST), 5, BUFFER_ADDRESS), 0u);
    EXPECT_EQ(guest_bytes(BUFFER_ADDRESS, 6), (std::vector<uint8_t> { 10, 20, 30, 0, 0, 0xee }));
}

TEST_F(FwCfgTest, DmaReadsContinueWhereThePreviousTransferStopped) {
    MUST(m_device.add_file("etc/data", { 1, 2, 3, 4, 5, 6 }));
    EXPECT_EQ(dma(select_read(fw_cfg::FILE_FIRST), 2, BUFFER_ADDRESS), 0u);
    EXPECT_EQ(dma(fw_cfg::DMA_SKIP, 1, 0), 0u);
    EXPECT_EQ(dma(fw_cfg::DMA_READ, 2, BUFFER_ADDRESS), 0u);
    EXPECT_EQ(guest_bytes(BUFFER_ADDRESS, 2), (std::vector<uint8_t> { 4, 5 }));
    // The port interface shares the position.
    EXPECT_EQ(data_byte(), 6);
}

TEST_F(FwCfgTest, DmaSkipPastTheEndStopsAtTheEnd) {
    MUST(m_device.add_file("etc/data", { 1, 2 }));
    EXPECT_EQ(dma((uint32_t { fw_cfg::FILE_FIRST } << 16) | fw_cfg::DMA_SELECT | fw_cfg::DMA_SKIP, 0xffffffffu, 0), 0u);
    EXPECT_EQ(data_byte(), 0);
}

TEST_F(FwCfgTest, DmaReadOutsideGuestMemorySetsTheErrorBit) {
    EXPECT_EQ(dma(select_read(fw_cfg::SIGNATURE), 4, MEMORY_SIZE), fw_cfg::DMA_ERROR);
    EXPECT_EQ(dma(select_read(fw_cfg::SIGNATURE), 4, MEMORY_SIZE - 2), fw_cfg::DMA_ERROR);
    EXPECT_EQ(dma(select_read(fw_cfg::SIGNATURE), 4, ~uint64_t { 0 } - 1), fw_cfg::DMA_ERROR);
}

TEST_F(FwCfgTest, DmaZeroFillThatLeavesGuestMemorySetsTheErrorBit) {
    // 4 bytes of item, then zeros that would run past the end of RAM.
    EXPECT_EQ(dma(select_read(fw_cfg::SIGNATURE), 0xffffffffu, BUFFER_ADDRESS), fw_cfg::DMA_ERROR);
    EXPECT_EQ(guest_bytes(BUFFER_ADDRESS, 4), (std::vector<uint8_t> { 'Q', 'E', 'M', 'U' }));
}

TEST_F(FwCfgTest, DmaWriteToAReadOnlyItemSetsTheErrorBit) {
    EXPECT_EQ(dma((uint32_t { fw_cfg::SIGNATURE } << 16) | fw_cfg::DMA_SELECT | fw_cfg::DMA_WRITE, 4, BUFFER_ADDRESS),
              fw_cfg::DMA_ERROR);
    EXPECT_EQ(read_ports(fw_cfg::SIGNATURE, 4), (std::vector<uint8_t> { 'Q', 'E', 'M', 'U' }));
}

TEST_F(FwCfgTest, DmaAccessStructureOutsideGuestMemoryIsIgnored) {
    // Nothing can be written back; the device must simply not fail. A structure that starts
    // in RAM but ends outside it is not read at all: the bytes inside RAM stay as they were.
    std::vector<uint8_t> const marker(8, 0x11);
    (void)m_memory.write(GuestAddress(MEMORY_SIZE - 8), std::as_bytes(std::span(marker)));
    EXPECT_EQ(dma(select_read(fw_cfg::SIGNATURE), 4, BUFFER_ADDRESS, MEMORY_SIZE - 8), 0x11111111u);
    EXPECT_EQ(guest_bytes(BUFFER_ADDRESS, 4), (std::vector<uint8_t> { 0, 0, 0, 0 }));
    EXPECT_EQ(dma(select_read(fw_cfg::SIGNATURE), 4, BUFFER_ADDRESS, MEMORY_SIZE + 0x1000), 0xdeadbeefu);
    EXPECT_EQ(dma(select_read(fw_cfg::SIGNATURE), 4, BUFFER_ADDRESS, ~uint64_t { 0 } - 7), 0xdeadbeefu);
}

TEST_F(FwCfgTest, DmaWithOnlySelectChangesTheSelection) {
    EXPECT_EQ(dma((uint32_t { fw_cfg::ID } << 16) | fw_cfg::DMA_SELECT, 100, 0), 0u);
    EXPECT_EQ(data_byte(), 0x03);
}

TEST_F(FwCfgTest, OddWidthsAndDataPortWritesChangeNothing) {
    select(fw_cfg::SIGNATURE);
    std::array<uint8_t, 1> one { 0x01 };
    m_device.write(fw_cfg::SELECTOR_OFFSET, one); // an 8-bit selector write
    m_device.write(fw_cfg::DATA_OFFSET, one);     // a data write
    std::array<uint8_t, 2> two {};
    m_device.read(fw_cfg::DATA_OFFSET, two); // a 16-bit data read
    EXPECT_EQ(two, (std::array<uint8_t, 2> { 0, 0 }));
    EXPECT_EQ(data_byte(), 'Q');
}

TEST_F(FwCfgTest, StateRoundTripsSelectionAndPosition) {
    select(fw_cfg::SIGNATURE);
    (void)data_byte();
    auto const saved = m_device.save();
    StateWriter writer;
    saved.encode(writer);
    StateReader reader(writer.payload());
    auto const decoded = MUST(FwCfgState::decode(reader));
    EXPECT_EQ(decoded, saved);

    FwCfg other(m_memory);
    MUST(other.restore(decoded));
    std::array<uint8_t, 1> byte {};
    other.read(fw_cfg::DATA_OFFSET, byte);
    EXPECT_EQ(byte[0], 'E');
}

} // namespace
} // namespace kvmm

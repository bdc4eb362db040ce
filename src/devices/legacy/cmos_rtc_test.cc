#include "devices/legacy/cmos_rtc.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

// 2026-11-25 13:45:07 UTC, a Wednesday.
constexpr std::time_t FIXED_TIME = 1795614307;

class CmosRtcTest : public ::testing::Test {
protected:
    uint8_t read_register(uint8_t index) {
        m_rtc.write(0, std::span<uint8_t const>(&index, 1));
        uint8_t value = 0;
        m_rtc.read(1, std::span(&value, 1));
        return value;
    }
    void write_register(uint8_t index, uint8_t value) {
        m_rtc.write(0, std::span<uint8_t const>(&index, 1));
        m_rtc.write(1, std::span<uint8_t const>(&value, 1));
    }
    CmosRtc m_rtc { [] { return FIXED_TIME; } };
};

TEST_F(CmosRtcTest, FixedTimeIsReportedInBcd) {
    EXPECT_EQ(read_register(0x00), 0x07);
    EXPECT_EQ(read_register(0x02), 0x45);
    EXPECT_EQ(read_register(0x04), 0x13);
    EXPECT_EQ(read_register(0x06), 0x04); // Wednesday, Sunday = 1
    EXPECT_EQ(read_register(0x07), 0x25);
    EXPECT_EQ(read_register(0x08), 0x11);
    EXPECT_EQ(read_register(0x09), 0x26);
    EXPECT_EQ(read_register(0x32), 0x20);
}

TEST_F(CmosRtcTest, BinaryAndTwelveHourModesFollowRegisterB) {
    write_register(0x0b, 0x04); // binary, 12-hour
    EXPECT_EQ(read_register(0x00), 7);
    EXPECT_EQ(read_register(0x04), 0x80 | 1); // 1 PM
    EXPECT_EQ(read_register(0x09), 26);
}

TEST_F(CmosRtcTest, StatusRegistersNeverShowUpdateInProgressAndReportValidTime) {
    EXPECT_EQ(read_register(0x0a) & 0x80, 0);
    EXPECT_EQ(read_register(0x0d), 0x80);
    EXPECT_EQ(read_register(0x0c), 0);
}

TEST_F(CmosRtcTest, CmosRamStoresBytesAndIndexIgnoresNmiBit) {
    write_register(0x40, 0xab);
    EXPECT_EQ(read_register(0x80 | 0x40), 0xab);
    write_register(0x00, 0x59); // time writes are ignored
    EXPECT_EQ(read_register(0x00), 0x07);
}

} // namespace
} // namespace kvmm

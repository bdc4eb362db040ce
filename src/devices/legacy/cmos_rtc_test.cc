#include "devices/legacy/cmos_rtc.h"

#include <gtest/gtest.h>

#include <random>

namespace kvmm {
namespace {

// 2026-11-25 13:45:07 UTC, a Wednesday.
constexpr std::time_t FIXED_TIME = 1795614307;
constexpr uint8_t REGISTER_B_INDEX = 0x0b;

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

TEST_F(CmosRtcTest, TwelveHourModeShowsMidnightAsTwelveAm) {
    CmosRtc rtc([] { return std::time_t { 1795564800 }; }); // 2026-11-25 00:00:00 UTC
    auto read = [&](uint8_t index) {
        rtc.write(0, std::span<uint8_t const>(&index, 1));
        uint8_t value = 0;
        rtc.read(1, std::span(&value, 1));
        return value;
    };
    uint8_t const twelve_hour_bcd = 0x00;
    rtc.write(0, std::span<uint8_t const>(&REGISTER_B_INDEX, 1));
    rtc.write(1, std::span<uint8_t const>(&twelve_hour_bcd, 1));
    EXPECT_EQ(read(0x04), 0x12);
    EXPECT_EQ(read(0x07), 0x25);
}

TEST_F(CmosRtcTest, TimeFollowsTheClockFunction) {
    std::time_t now = FIXED_TIME;
    CmosRtc rtc([&] { return now; });
    uint8_t const seconds = 0x00;
    rtc.write(0, std::span<uint8_t const>(&seconds, 1));
    uint8_t value = 0;
    rtc.read(1, std::span(&value, 1));
    EXPECT_EQ(value, 0x07);
    now += 5;
    rtc.read(1, std::span(&value, 1));
    EXPECT_EQ(value, 0x12);
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
    for (uint8_t index = 0x0e; index < 0x80; ++index) {
        if (index == 0x32)
            continue; // century
        write_register(index, static_cast<uint8_t>(index ^ 0x5a));
    }
    for (uint8_t index = 0x0e; index < 0x80; ++index) {
        if (index != 0x32) {
            EXPECT_EQ(read_register(index), static_cast<uint8_t>(index ^ 0x5a)) << int(index);
        }
    }
}

TEST_F(CmosRtcTest, RandomAccessesNeverCrash) {
    std::mt19937 random(7);
    for (int i = 0; i < 20000; ++i) {
        uint8_t buffer[8] {};
        size_t const width = 1u << (random() % 4);
        uint64_t const offset = random() % 4;
        if (random() % 2)
            m_rtc.read(offset, std::span(buffer, width));
        else {
            buffer[0] = static_cast<uint8_t>(random());
            m_rtc.write(offset, std::span<uint8_t const>(buffer, width));
        }
    }
    write_register(0x0b, 0x06); // binary, 24-hour
    EXPECT_EQ(read_register(0x04), 13);
}

} // namespace
} // namespace kvmm

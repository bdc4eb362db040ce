#include "devices/legacy/cmos_rtc.h"

#include "base/testing/state_round_trip.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

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

// Selects `index` through port 0x70 (with the NMI mask bit, as a BIOS writes it) and returns
// the data port, for the saved-state tests that drive two clocks side by side.
uint8_t select_and_read(CmosRtc& rtc, uint8_t index) {
    uint8_t const selector = index | 0x80;
    rtc.write(0, std::span(&selector, 1));
    uint8_t value = 0;
    rtc.read(1, std::span(&value, 1));
    return value;
}

void select_and_write(CmosRtc& rtc, uint8_t index, uint8_t value) {
    rtc.write(0, std::span(&index, 1));
    rtc.write(1, std::span(&value, 1));
}

std::vector<uint8_t> read_every_register(CmosRtc& rtc) {
    std::vector<uint8_t> values;
    for (uint8_t index = 0; index < CMOS_RAM_SIZE; ++index)
        values.push_back(select_and_read(rtc, index));
    return values;
}

TEST(CmosRtcState, RestoredClockHasTheSameRamIndexAndModes) {
    CmosRtc original([] { return FIXED_TIME; });
    select_and_write(original, 0x0b, 0x06 | 0x20); // binary, 24-hour, alarm interrupt enable
    select_and_write(original, 0x0a, 0xaf);        // UIP is dropped: 0x2f is kept
    select_and_write(original, 0x01, 0x30);        // alarm seconds
    select_and_write(original, 0x10, 0x44);        // floppy types
    for (uint8_t index = 0x40; index < 0x80; ++index)
        select_and_write(original, index, static_cast<uint8_t>(index * 3));
    uint8_t const index_with_nmi_mask = 0x80 | 0x5d;
    original.write(0, std::span(&index_with_nmi_mask, 1));

    auto const saved = original.save();
    EXPECT_EQ(saved.index, 0x5d);
    EXPECT_EQ(saved.ram[0x0a], 0x2f);
    EXPECT_EQ(saved.ram[0x00], 0) << "the time is not stored";
    auto const decoded = testing::round_trip(saved);
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(*decoded, saved);
    CmosRtc copy([] { return FIXED_TIME; });
    auto const restored = copy.restore(*decoded);
    ASSERT_TRUE(restored) << restored.error().message();
    EXPECT_EQ(copy.save(), saved);

    // The data port reads the restored index first, then every register reads alike.
    uint8_t from_original = 0;
    uint8_t from_copy = 0;
    original.read(1, std::span(&from_original, 1));
    copy.read(1, std::span(&from_copy, 1));
    EXPECT_EQ(from_copy, from_original);
    EXPECT_EQ(from_copy, static_cast<uint8_t>(0x5d * 3));
    auto const expected = read_every_register(original);
    EXPECT_EQ(read_every_register(copy), expected);
    EXPECT_EQ(expected[0x04], 13) << "binary 24-hour mode came along";
}

TEST(CmosRtcState, RestoredClockTellsItsOwnHostsTimeNotTheSavedOne) {
    CmosRtc original([] { return FIXED_TIME; });
    select_and_write(original, 0x0b, 0x06); // binary, 24-hour
    CmosRtc elsewhere([] { return FIXED_TIME + 3600; });
    ASSERT_TRUE(elsewhere.restore(*testing::round_trip(original.save())));
    EXPECT_EQ(select_and_read(original, 0x04), 13);
    EXPECT_EQ(select_and_read(elsewhere, 0x04), 14);
}

TEST(CmosRtcState, DecodeRefusesATruncatedSectionAWrongVersionAndAWrongRamSize) {
    StateWriter short_body;
    short_body.begin_section(CmosRtcState::SECTION, CmosRtcState::VERSION);
    short_body.u8(0);
    short_body.end_section();
    auto const truncated = testing::decode_payload<CmosRtcState>(short_body.payload());
    ASSERT_FALSE(truncated);
    EXPECT_NE(truncated.error().message().find("cmos-rtc/ram: truncated"), std::string::npos)
        << truncated.error().message();

    StateWriter newer;
    newer.begin_section(CmosRtcState::SECTION, CmosRtcState::VERSION + 1);
    newer.end_section();
    auto const version = testing::decode_payload<CmosRtcState>(newer.payload());
    ASSERT_FALSE(version);
    EXPECT_NE(version.error().message().find("cmos-rtc (section): version 2 is not one this kvmm reads"),
              std::string::npos)
        << version.error().message();

    for (size_t size : { CMOS_RAM_SIZE - 1, CMOS_RAM_SIZE + 1 }) {
        StateWriter writer;
        writer.begin_section(CmosRtcState::SECTION, CmosRtcState::VERSION);
        writer.u8(0);
        writer.bytes(std::vector<uint8_t>(size, 0));
        writer.end_section();
        auto const wrong = testing::decode_payload<CmosRtcState>(writer.payload());
        ASSERT_FALSE(wrong);
        std::string const expected = size < CMOS_RAM_SIZE ? "cmos-rtc/ram: 127 bytes, not 128"
                                                          : "cmos-rtc/ram: length 129 is more than the 128 allowed";
        EXPECT_NE(wrong.error().message().find(expected), std::string::npos) << wrong.error().message();
    }
}

TEST(CmosRtcState, RestoreRefusesAnIndexPastTheRamOrBytesTheClockNeverStoresAndChangesNothing) {
    CmosRtc rtc([] { return FIXED_TIME; });
    select_and_write(rtc, 0x20, 0x99);
    auto const before = rtc.save();
    auto refused = [&](CmosRtcState const& state) {
        auto const result = rtc.restore(state);
        EXPECT_EQ(rtc.save(), before);
        return result ? std::string("accepted") : result.error().message();
    };
    CmosRtcState state = before;
    state.index = 0x80;
    EXPECT_NE(refused(state).find("index 0x80 is past the 128-byte RAM"), std::string::npos);
    state = before;
    state.ram[0x00] = 0x59; // seconds
    EXPECT_NE(refused(state).find("ram[0x00] is 0x59, but the clock stores nothing there"), std::string::npos);
    state = before;
    state.ram[0x32] = 0x20; // century
    EXPECT_NE(refused(state).find("ram[0x32]"), std::string::npos);
    state = before;
    state.ram[0x0c] = 0x80; // register C
    EXPECT_NE(refused(state).find("ram[0x0c]"), std::string::npos);
    state = before;
    state.ram[0x0a] = 0xa6;
    EXPECT_NE(refused(state).find("ram[0x0a] (register A) 0xa6 has the read-only update-in-progress bit"),
              std::string::npos);
    EXPECT_EQ(select_and_read(rtc, 0x20), 0x99);
}

} // namespace
} // namespace kvmm

#include "devices/legacy/power_control.h"

#include "devices/legacy/boot_marker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace kvmm {
namespace {

TEST(PowerControl, SleepTypeFiveWithEnableBitPowersOffAndResetValueResets) {
    std::vector<PowerEvent> events;
    PowerControl power([&](PowerEvent event) { events.push_back(event); });
    auto write = [&](uint8_t value) { power.write(0, std::span<uint8_t const>(&value, 1)); };
    write(static_cast<uint8_t>(SLEEP_ENABLE_BIT | (POWER_OFF_SLEEP_TYPE << SLEEP_TYPE_SHIFT))); // 0x34
    write(RESET_VALUE);
    write(POWER_OFF_SLEEP_TYPE << SLEEP_TYPE_SHIFT);   // no SLP_EN: ignored
    write(SLEEP_ENABLE_BIT | (3 << SLEEP_TYPE_SHIFT)); // S3: unsupported, ignored
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0], PowerEvent::PowerOff);
    EXPECT_EQ(events[1], PowerEvent::Reset);
}

TEST(PowerControl, ReadsReturnZeroAndOtherOffsetsAreIgnored) {
    int events = 0;
    PowerControl power([&](PowerEvent) { ++events; });
    uint8_t value = 0xff;
    power.read(0, std::span(&value, 1));
    EXPECT_EQ(value, 0);
    uint8_t const reset = RESET_VALUE;
    power.write(1, std::span<uint8_t const>(&reset, 1));
    power.write(0, std::span<uint8_t const>());
    EXPECT_EQ(events, 0);
}

TEST(PowerControl, EveryByteValueIsClassifiedExactlyOnce) {
    std::vector<PowerEvent> events;
    PowerControl power([&](PowerEvent event) { events.push_back(event); });
    int expected_power_offs = 0;
    for (int value = 0; value < 256; ++value) {
        auto const byte = static_cast<uint8_t>(value);
        power.write(0, std::span<uint8_t const>(&byte, 1));
        expected_power_offs += (byte & 0x3c) == 0x34; // SLP_EN with SLP_TYP 5, any other bits
    }
    EXPECT_EQ(std::count(events.begin(), events.end(), PowerEvent::PowerOff), expected_power_offs);
    EXPECT_EQ(std::count(events.begin(), events.end(), PowerEvent::Reset), 1);
}

TEST(BootMarker, CountsOnlyTheMarkerValue) {
    BootMarker marker;
    uint8_t value = BOOT_MARKER_VALUE;
    marker.write(0, std::span<uint8_t const>(&value, 1));
    value = 7;
    marker.write(0, std::span<uint8_t const>(&value, 1));
    EXPECT_EQ(marker.marker_count(), 1u);
    value = BOOT_MARKER_VALUE;
    marker.write(1, std::span<uint8_t const>(&value, 1)); // outside the one-byte port
    marker.write(0, std::span<uint8_t const>(&value, 1));
    EXPECT_EQ(marker.marker_count(), 2u);
    uint8_t read_back = 0xff;
    marker.read(0, std::span(&read_back, 1));
    EXPECT_EQ(read_back, 0);
}

} // namespace
} // namespace kvmm

#include "devices/legacy/pvpanic.h"

namespace kvmm {
namespace {

TEST(Pvpanic, AdvertisesEventsAndReportsPanic) {
    std::vector<Pvpanic::Event> events;
    Pvpanic device([&](Pvpanic::Event event) { events.push_back(event); });
    uint8_t value = 0;
    device.read(0, std::span(&value, 1));
    EXPECT_EQ(value, PVPANIC_PANICKED | PVPANIC_CRASH_LOADED);
    uint8_t const panicked = PVPANIC_PANICKED;
    device.write(0, std::span(&panicked, 1));
    uint8_t const nothing = 0x80;
    device.write(0, std::span(&nothing, 1));
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0], Pvpanic::Event::Panicked);
}

} // namespace
} // namespace kvmm

#include "base/testing/state_round_trip.h"

#include <string>

namespace kvmm {
namespace {

TEST(BootMarkerState, RestoredMarkerContinuesTheCount) {
    BootMarker original;
    uint8_t const marker = BOOT_MARKER_VALUE;
    for (int i = 0; i < 3; ++i)
        original.write(0, std::span(&marker, 1));
    auto const saved = original.save();
    EXPECT_EQ(saved.markers_seen, 3u);
    auto const decoded = testing::round_trip(saved);
    ASSERT_TRUE(decoded) << decoded.error().message();
    BootMarker copy;
    ASSERT_TRUE(copy.restore(*decoded));
    EXPECT_EQ(copy.save(), saved);
    original.write(0, std::span(&marker, 1));
    copy.write(0, std::span(&marker, 1));
    EXPECT_EQ(copy.marker_count(), original.marker_count());
    EXPECT_EQ(copy.marker_count(), 4u);
}

TEST(BootMarkerState, DecodeRefusesATruncatedSectionAndAWrongVersion) {
    StateWriter short_body;
    short_body.begin_section(BootMarkerState::SECTION, BootMarkerState::VERSION);
    short_body.u16(3);
    short_body.end_section();
    auto const truncated = testing::decode_payload<BootMarkerState>(short_body.payload());
    ASSERT_FALSE(truncated);
    EXPECT_NE(truncated.error().message().find("boot-marker/markers_seen: truncated: needs 4 bytes, 2 left"),
              std::string::npos)
        << truncated.error().message();
    StateWriter newer;
    newer.begin_section(BootMarkerState::SECTION, 2);
    newer.u32(3);
    newer.end_section();
    auto const version = testing::decode_payload<BootMarkerState>(newer.payload());
    ASSERT_FALSE(version);
    EXPECT_NE(version.error().message().find("boot-marker (section): version 2"), std::string::npos)
        << version.error().message();
}

TEST(StatelessDeviceState, PowerControlAndPvpanicRoundTripAndActAsBefore) {
    std::vector<PowerEvent> power_events;
    PowerControl power([&](PowerEvent event) { power_events.push_back(event); });
    auto const power_state = testing::round_trip(power.save());
    ASSERT_TRUE(power_state) << power_state.error().message();
    ASSERT_TRUE(power.restore(*power_state));
    EXPECT_EQ(power.save(), *power_state);
    uint8_t const reset = RESET_VALUE;
    power.write(0, std::span(&reset, 1));
    EXPECT_EQ(power_events, (std::vector<PowerEvent> { PowerEvent::Reset }));

    std::vector<Pvpanic::Event> panics;
    Pvpanic pvpanic([&](Pvpanic::Event event) { panics.push_back(event); });
    auto const pvpanic_state = testing::round_trip(pvpanic.save());
    ASSERT_TRUE(pvpanic_state) << pvpanic_state.error().message();
    ASSERT_TRUE(pvpanic.restore(*pvpanic_state));
    EXPECT_EQ(pvpanic.save(), *pvpanic_state);
    uint8_t const panicked = PVPANIC_PANICKED;
    pvpanic.write(0, std::span(&panicked, 1));
    EXPECT_EQ(panics, (std::vector<Pvpanic::Event> { Pvpanic::Event::Panicked }));
}

TEST(StatelessDeviceState, DecodeRefusesAWrongVersionOrABodyThatIsNotEmpty) {
    StateWriter newer;
    newer.begin_section(PowerControlState::SECTION, PowerControlState::VERSION + 1);
    newer.end_section();
    auto const version = testing::decode_payload<PowerControlState>(newer.payload());
    ASSERT_FALSE(version);
    EXPECT_NE(version.error().message().find("power-control (section): version 2"), std::string::npos)
        << version.error().message();
    StateWriter stuffed;
    stuffed.begin_section(PvpanicState::SECTION, PvpanicState::VERSION);
    stuffed.u8(1);
    stuffed.end_section();
    auto const extra = testing::decode_payload<PvpanicState>(stuffed.payload());
    ASSERT_FALSE(extra);
    EXPECT_NE(extra.error().message().find("pvpanic/: 1 bytes left unread"), std::string::npos)
        << extra.error().message();
    StateWriter other;
    other.begin_section(PowerControlState::SECTION, PowerControlState::VERSION);
    other.end_section();
    auto const foreign = testing::decode_payload<PvpanicState>(other.payload());
    ASSERT_FALSE(foreign);
    EXPECT_NE(foreign.error().message().find("found section 'power-control' instead"), std::string::npos)
        << foreign.error().message();
}

} // namespace
} // namespace kvmm

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

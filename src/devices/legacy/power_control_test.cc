#include "devices/legacy/power_control.h"

#include "devices/legacy/boot_marker.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvmm {
namespace {

TEST(PowerControl, SleepTypeFiveWithEnableBitPowersOffAndResetValueResets) {
    std::vector<PowerEvent> events;
    PowerControl power([&](PowerEvent event) { events.push_back(event); });
    auto write = [&](uint8_t value) { power.write(0, std::span<uint8_t const>(&value, 1)); };
    write(static_cast<uint8_t>(SLEEP_ENABLE_BIT | (POWER_OFF_SLEEP_TYPE << SLEEP_TYPE_SHIFT))); // 0x34
    write(RESET_VALUE);
    write(POWER_OFF_SLEEP_TYPE << SLEEP_TYPE_SHIFT); // no SLP_EN: ignored
    write(SLEEP_ENABLE_BIT | (3 << SLEEP_TYPE_SHIFT)); // S3: unsupported, ignored
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0], PowerEvent::PowerOff);
    EXPECT_EQ(events[1], PowerEvent::Reset);
}

TEST(BootMarker, CountsOnlyTheMarkerValue) {
    BootMarker marker;
    uint8_t value = BOOT_MARKER_VALUE;
    marker.write(0, std::span<uint8_t const>(&value, 1));
    value = 7;
    marker.write(0, std::span<uint8_t const>(&value, 1));
    EXPECT_EQ(marker.marker_count(), 1u);
}

} // namespace
} // namespace kvmm

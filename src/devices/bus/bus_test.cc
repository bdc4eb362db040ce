#include "devices/bus/bus.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvmm {
namespace {

class RecordingDevice final : public BusDevice {
public:
    void read(uint64_t offset, std::span<uint8_t> data) override {
        for (auto& byte : data)
            byte = static_cast<uint8_t>(offset);
    }
    void write(uint64_t offset, std::span<uint8_t const> data) override { writes.push_back({ offset, data.size() }); }
    std::vector<std::pair<uint64_t, size_t>> writes;
};

TEST(Bus, DispatchesWithOffsetIntoDevice) {
    Bus bus("pio");
    auto device = std::make_shared<RecordingDevice>();
    ASSERT_TRUE(bus.insert(device, 0x3f8, 8).has_value());
    uint8_t value = 0;
    EXPECT_TRUE(bus.read(0x3fd, std::span(&value, 1)));
    EXPECT_EQ(value, 5);
    uint8_t const out = 1;
    EXPECT_TRUE(bus.write(0x3f8, std::span(&out, 1)));
    ASSERT_EQ(device->writes.size(), 1u);
    EXPECT_EQ(device->writes[0].first, 0u);
}

TEST(Bus, UnclaimedReadReturnsAllOnes) {
    Bus bus("pio");
    uint8_t value[4] {};
    EXPECT_FALSE(bus.read(0x1234, value));
    for (auto byte : value)
        EXPECT_EQ(byte, 0xff);
}

TEST(Bus, AccessStraddlingRangeEndIsUnclaimed) {
    Bus bus("mmio");
    ASSERT_TRUE(bus.insert(std::make_shared<RecordingDevice>(), 0x1000, 0x10).has_value());
    uint8_t data[4] {};
    EXPECT_FALSE(bus.read(0x100e, data));
    EXPECT_TRUE(bus.read(0x100c, data));
}

TEST(Bus, OverlappingZeroLengthAndWrappingRangesAreRejected) {
    Bus bus("mmio");
    auto device = std::make_shared<RecordingDevice>();
    ASSERT_TRUE(bus.insert(device, 0x1000, 0x100).has_value());
    EXPECT_FALSE(bus.insert(device, 0x10ff, 1).has_value());
    EXPECT_FALSE(bus.insert(device, 0xf00, 0x101).has_value());
    EXPECT_FALSE(bus.insert(device, 0x2000, 0).has_value());
    EXPECT_FALSE(bus.insert(device, ~0ull - 1, 4).has_value());
    EXPECT_TRUE(bus.insert(device, 0x1100, 1).has_value());
}

} // namespace
} // namespace kvmm

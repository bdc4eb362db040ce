#include "devices/virtio/rng/rng_device.h"

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace kvmm::virtio {
namespace {

using testing::DriverQueue;
using testing::MmioDriver;

class RngDeviceTest : public ::testing::Test {
protected:
    void create(RngDevice::EntropySource source = {}, RngDevice::Budget budget = {}) {
        auto device = std::make_unique<RngDevice>(std::move(source), std::move(budget));
        rng = device.get();
        transport = *MmioTransport::create("rng", std::move(device), memory, line, loop);
        driver.emplace(*transport, loop);
        ASSERT_EQ(driver->initialize(feature_bit(FEATURE_RING_EVENT_IDX), { &queue }) & STATUS_DRIVER_OK,
                  STATUS_DRIVER_OK);
    }

    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 4 << 20 } });
    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    RngDevice* rng { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
    DriverQueue queue { memory, GuestAddress(0x10000), 256 };
};

TEST_F(RngDeviceTest, FillsWritableBuffersWithEntropy) {
    create([](std::span<std::byte> out) -> Expected<void> {
        std::fill(out.begin(), out.end(), std::byte { 0xa5 });
        return {};
    });
    auto const buffer = queue.writable_buffer(100);
    queue.add_chain({ buffer });
    driver->notify(0);
    driver->run_event_loop();
    auto const used = queue.pop_used();
    ASSERT_TRUE(used);
    EXPECT_EQ(used->length, 100u);
    auto const bytes = queue.read(buffer.address, 100);
    EXPECT_TRUE(std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte { 0xa5 }; }));
    EXPECT_EQ(driver->read32(0x60) & INTERRUPT_USED_BUFFER, INTERRUPT_USED_BUFFER);
}

TEST_F(RngDeviceTest, HostEntropyIsNotConstant) {
    create();
    auto const buffer = queue.writable_buffer(64);
    queue.add_chain({ buffer });
    driver->notify(0);
    driver->run_event_loop();
    ASSERT_TRUE(queue.pop_used());
    auto const bytes = queue.read(buffer.address, 64);
    EXPECT_GT(std::count_if(bytes.begin(), bytes.end(), [](std::byte b) { return b != std::byte { 0 }; }), 32);
}

TEST_F(RngDeviceTest, LargeRequestsAreCapped) {
    create();
    queue.add_chain({ queue.writable_buffer(1 << 20) });
    driver->notify(0);
    driver->run_event_loop();
    auto const used = queue.pop_used();
    ASSERT_TRUE(used);
    EXPECT_EQ(used->length, RngDevice::MAX_BYTES_PER_REQUEST);
}

TEST_F(RngDeviceTest, ExhaustedBudgetDefersRequestsUntilRetried) {
    bool allow = false;
    create({}, [&](uint64_t) { return allow; });
    queue.add_chain({ queue.writable_buffer(16) });
    driver->notify(0);
    driver->run_event_loop();
    EXPECT_FALSE(queue.pop_used());
    EXPECT_EQ(rng->requests_deferred(), 1u);
    allow = true;
    rng->process_queue(0); // what the owner's rate-limit timer does
    EXPECT_TRUE(queue.pop_used());
}

TEST_F(RngDeviceTest, FailingEntropySourceNeedsReset) {
    create([](std::span<std::byte>) -> Expected<void> { return Error("no entropy"); });
    queue.add_chain({ queue.writable_buffer(16) });
    driver->notify(0);
    driver->run_event_loop();
    EXPECT_EQ(driver->read32(0x70) & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
}

TEST_F(RngDeviceTest, ReadOnlyBuffersGetNothingWritten) {
    create();
    std::byte const data[4] {};
    queue.add_chain({ queue.buffer(data) });
    driver->notify(0);
    driver->run_event_loop();
    auto const used = queue.pop_used();
    ASSERT_TRUE(used);
    EXPECT_EQ(used->length, 0u);
}

} // namespace
} // namespace kvmm::virtio

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

// A second entropy device with its transport on the same memory and event loop: where a saved
// device is restored.
struct RestoredRng {
    RestoredRng(GuestMemory const& memory, EventLoop& loop, RngDevice::EntropySource source = {},
                RngDevice::Budget budget = {}) {
        auto owned = std::make_unique<RngDevice>(std::move(source), std::move(budget));
        device = owned.get();
        transport = *MmioTransport::create("rng", std::move(owned), memory, line, loop);
        driver.emplace(*transport, loop);
    }

    Expected<void> restore(std::span<std::byte const> payload) {
        return testing::restore_transport(*transport, payload);
    }

    RecordingInterruptLine line;
    RngDevice* device { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
};

std::vector<std::byte> save(MmioTransport const& transport) {
    StateWriter writer;
    auto const saved = transport.save_state(writer);
    EXPECT_TRUE(saved) << saved.error().message();
    return writer.payload();
}

RngDevice::EntropySource constant(std::byte value) {
    return [value](std::span<std::byte> out) -> Expected<void> {
        std::fill(out.begin(), out.end(), value);
        return {};
    };
}

TEST_F(RngDeviceTest, SaveRestoreSaveGivesIdenticalBytesAndTheRestoredDeviceServesNewRequests) {
    create(constant(std::byte { 0xa5 }));
    for (int i = 0; i < 2; ++i)
        queue.add_chain({ queue.writable_buffer(16) });
    driver->notify(0);
    driver->run_event_loop();
    ASSERT_TRUE(queue.pop_used());
    ASSERT_TRUE(queue.pop_used());
    queue.set_used_event(queue.used_index()); // as a driver does: interrupt me for the next one
    auto const saved = save(*transport);

    RestoredRng restored(memory, loop, constant(std::byte { 0x5a }));
    auto const result = restored.restore(saved);
    ASSERT_TRUE(result) << result.error().message();
    EXPECT_EQ(save(*restored.transport), saved);

    restored.driver->write32(0x64, INTERRUPT_USED_BUFFER);
    auto const buffer = queue.writable_buffer(32);
    uint16_t const head = queue.add_chain({ buffer });
    restored.driver->notify(0);
    restored.driver->run_event_loop();
    auto const used = queue.pop_used();
    ASSERT_TRUE(used);
    EXPECT_EQ(used->id, head);
    EXPECT_EQ(used->length, 32u);
    EXPECT_EQ(queue.used_index(), 3u) << "the two requests served before the save are not served again";
    auto const bytes = queue.read(buffer.address, 32);
    EXPECT_TRUE(std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte { 0x5a }; }));
    EXPECT_EQ(restored.driver->read32(0x60) & INTERRUPT_USED_BUFFER, INTERRUPT_USED_BUFFER);
    EXPECT_GE(std::count(restored.line.levels.begin(), restored.line.levels.end(), true), 1);
    EXPECT_EQ(restored.device->bytes_served(), 32u) << "counters are metrics of this process, not state";
}

TEST_F(RngDeviceTest, RequestDeferredByTheBudgetAtSaveIsServedAfterRestore) {
    create({}, [](uint64_t) { return false; });
    queue.add_chain({ queue.writable_buffer(16) });
    driver->notify(0);
    driver->run_event_loop();
    ASSERT_EQ(rng->requests_deferred(), 1u);
    auto const saved = save(*transport);

    RestoredRng restored(memory, loop);
    ASSERT_TRUE(restored.restore(saved));
    restored.driver->run_event_loop();
    auto const used = queue.pop_used();
    ASSERT_TRUE(used) << "the restore polls the queue, so the deferred request is served";
    EXPECT_EQ(used->length, 16u);
}

TEST_F(RngDeviceTest, InactiveDeviceRoundTripsAndIsActivatedAfterwards) {
    auto owned = std::make_unique<RngDevice>();
    auto inactive = *MmioTransport::create("rng", std::move(owned), memory, line, loop);
    auto const saved = save(*inactive);
    RestoredRng restored(memory, loop);
    ASSERT_TRUE(restored.restore(saved));
    EXPECT_EQ(save(*restored.transport), saved);
    EXPECT_EQ(restored.driver->initialize(0, { &queue }) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    queue.add_chain({ queue.writable_buffer(8) });
    restored.driver->notify(0);
    restored.driver->run_event_loop();
    EXPECT_TRUE(queue.pop_used());
}

TEST_F(RngDeviceTest, DeviceStateThatDoesNotFitIsRefusedNamingTheFieldAndChangesNothing) {
    create();
    auto const transport_state = transport->save();
    auto const with_device_section = [&](auto&& write_device) {
        StateWriter writer;
        transport_state.encode(writer);
        write_device(writer);
        return writer.payload();
    };
    auto const expect_refused = [&](std::vector<std::byte> const& payload, std::string_view field) {
        RestoredRng target(memory, loop);
        auto const before = target.transport->save();
        auto const refused = target.restore(payload);
        ASSERT_FALSE(refused) << field;
        EXPECT_NE(refused.error().message().find(field), std::string::npos) << refused.error().message();
        EXPECT_EQ(target.transport->save(), before);
        // Nothing was handed to the device: a notification finds it inactive.
        uint16_t const used_before = queue.used_index();
        queue.add_chain({ queue.writable_buffer(8) });
        target.driver->notify(0);
        target.driver->run_event_loop();
        EXPECT_EQ(queue.used_index(), used_before);
        EXPECT_EQ(target.device->bytes_served(), 0u);
        queue.set_available_index(static_cast<uint16_t>(queue.available_index() - 1));
    };

    expect_refused(with_device_section([](StateWriter& writer) {
                       writer.begin_section(RngDevice::SECTION, RngDevice::VERSION);
                       writer.boolean(false);
                       writer.end_section();
                   }),
                   "virtio-rng/active");
    expect_refused(with_device_section([](StateWriter& writer) {
                       writer.begin_section(RngDevice::SECTION, RngDevice::VERSION + 1);
                       writer.end_section();
                   }),
                   "virtio-rng (section): version 2");
    expect_refused(with_device_section([](StateWriter& writer) {
                       writer.begin_section(RngDevice::SECTION, RngDevice::VERSION);
                       writer.boolean(true);
                       QueueState state;
                       state.next_available = 1;
                       state.next_used = 0;
                       state.in_flight_heads = { 300 };
                       state.encode(writer);
                       writer.end_section();
                   }),
                   "virtio-rng/virtqueue: 1 heads held, but this device holds none between turns");
    expect_refused(with_device_section([](StateWriter& writer) {
                       writer.begin_section(RngDevice::SECTION, RngDevice::VERSION);
                       writer.boolean(true);
                       writer.u8(7); // a queue state cut short
                       writer.end_section();
                   }),
                   "virtio-rng/virtqueue (section)");
}

} // namespace
} // namespace kvmm::virtio

#include "devices/virtio/console/console_device.h"

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "devices/virtio/work_budget.h"

#include <gtest/gtest.h>

#include <cstring>

namespace kvmm::virtio {
namespace {

using testing::DriverQueue;
using testing::MmioDriver;

class CollectingSink final : public ByteSink {
public:
    void write(std::span<uint8_t const> bytes) override { text.append(bytes.begin(), bytes.end()); }
    std::string text;
};

std::vector<std::byte> bytes_of(std::string_view text) {
    std::vector<std::byte> bytes(text.size());
    std::memcpy(bytes.data(), text.data(), text.size());
    return bytes;
}

std::span<uint8_t const> input(std::string_view text) {
    return { reinterpret_cast<uint8_t const*>(text.data()), text.size() };
}

class ConsoleDeviceTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto device = std::make_unique<ConsoleDevice>(sink);
        console = device.get();
        transport = *MmioTransport::create("console", std::move(device), memory, line, loop);
        driver.emplace(*transport, loop);
    }
    void start() {
        ASSERT_EQ(driver->initialize(feature_bit(FEATURE_RING_EVENT_IDX), { &receive, &transmit }) & STATUS_DRIVER_OK,
                  STATUS_DRIVER_OK);
    }

    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 4 << 20 } });
    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    std::shared_ptr<CollectingSink> sink = std::make_shared<CollectingSink>();
    ConsoleDevice* console { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
    DriverQueue receive { memory, GuestAddress(0x10000), 64 };
    DriverQueue transmit { memory, GuestAddress(0x200000), 64 };
};

TEST_F(ConsoleDeviceTest, TransmittedBuffersReachTheOutputInOrder) {
    start();
    transmit.add_chain({ transmit.buffer(bytes_of("hello ")), transmit.buffer(bytes_of("world")) });
    transmit.add_chain({ transmit.buffer(bytes_of("!\n")) });
    driver->notify(1);
    driver->run_event_loop();
    EXPECT_EQ(sink->text, "hello world!\n");
    EXPECT_TRUE(transmit.pop_used());
    EXPECT_TRUE(transmit.pop_used());
    EXPECT_EQ(console->bytes_transmitted(), 13u);
}

TEST_F(ConsoleDeviceTest, HugeTransmitChainIsCopiedInSlicesAcrossWakeUps) {
    start();
    // 16 descriptors aliasing one 512 KiB buffer: an 8 MiB chain from 512 KiB of memory.
    auto const buffer = transmit.allocate(512 * 1024);
    std::vector<testing::DriverBuffer> aliases(16, testing::DriverBuffer { buffer, 512 * 1024, false });
    transmit.add_chain(aliases);
    transmit.add_chain({ transmit.buffer(bytes_of("after")) });
    auto stop = *EventFd::create();
    bool stop_served = false;
    ASSERT_TRUE(loop.add(stop.fd(), [&] {
        (void)stop.consume();
        stop_served = true;
    }));
    ASSERT_TRUE(stop.signal());
    driver->notify(1);
    size_t output_before_stop = 0;
    for (int round = 0; round < 20 && !stop_served; ++round) {
        ASSERT_TRUE(loop.run_once(std::chrono::milliseconds(0)));
        output_before_stop = sink->text.size();
    }
    EXPECT_TRUE(stop_served);
    EXPECT_LE(output_before_stop, 2 * WorkBudget::DEFAULT_BYTES) << "the whole chain was copied in one wake-up";
    driver->run_event_loop();
    EXPECT_EQ(sink->text.size(), 16u * 512 * 1024 + 5) << "nothing lost across slices";
    EXPECT_EQ(sink->text.substr(sink->text.size() - 5), "after") << "order kept";
    EXPECT_TRUE(transmit.pop_used());
    EXPECT_TRUE(transmit.pop_used());
    loop.remove(stop.fd());
}

TEST_F(ConsoleDeviceTest, InputFillsReceiveBuffersAndWaitsForMore) {
    start();
    auto const first = receive.writable_buffer(4);
    receive.add_chain({ first });
    driver->notify(0);
    driver->run_event_loop();
    EXPECT_EQ(console->receive(input("abcdefg")), 7u);
    auto const used = receive.pop_used();
    ASSERT_TRUE(used);
    EXPECT_EQ(used->length, 4u);
    EXPECT_EQ(receive.read(first.address, 4), bytes_of("abcd"));
    EXPECT_TRUE(console->has_pending_input());
    auto const second = receive.writable_buffer(16);
    receive.add_chain({ second });
    driver->notify(0);
    driver->run_event_loop();
    auto const rest = receive.pop_used();
    ASSERT_TRUE(rest);
    EXPECT_EQ(rest->length, 3u);
    EXPECT_EQ(receive.read(second.address, 3), bytes_of("efg"));
    EXPECT_FALSE(console->has_pending_input());
}

TEST_F(ConsoleDeviceTest, InputBeforeTheDriverIsReadyIsKeptBounded) {
    std::string const big(ConsoleDevice::MAX_PENDING_INPUT + 100, 'x');
    EXPECT_EQ(console->receive(input(big)), ConsoleDevice::MAX_PENDING_INPUT);
    EXPECT_EQ(console->receive(input("y")), 0u);
}

TEST_F(ConsoleDeviceTest, EmergencyWriteOutputsOneCharacter) {
    uint8_t const character[4] = { 'Z', 0, 0, 0 };
    transport->write(0x100 + 8, character);
    EXPECT_EQ(sink->text, "Z");
}

TEST_F(ConsoleDeviceTest, ConfigReportsOnePort) { EXPECT_EQ(driver->read32(0x104), 1u); }

TEST_F(ConsoleDeviceTest, MalformedTransmitChainNeedsReset) {
    start();
    transmit.write_descriptor(0, { 0xffff'ffff'0000ull, 16, 0, 0 });
    transmit.offer(0);
    driver->notify(1);
    driver->run_event_loop();
    EXPECT_EQ(driver->read32(0x70) & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
    EXPECT_TRUE(sink->text.empty());
}

} // namespace
} // namespace kvmm::virtio

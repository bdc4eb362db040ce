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

TEST_F(ConsoleDeviceTest, InputLeftOverAsksToBeNotifiedOfTheNextReceiveBuffer) {
    start();
    receive.add_chain({ receive.writable_buffer(4) });
    driver->notify(0);
    driver->run_event_loop();
    EXPECT_EQ(console->receive(input("abcdefg")), 7u);
    ASSERT_TRUE(console->has_pending_input());
    // With EVENT_IDX the driver notifies only when its index passes avail_event (2.7.10): the
    // device, out of buffers with input waiting, must have asked for the next one.
    EXPECT_EQ(receive.available_event(), receive.available_index());
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

// Where a saved console is restored: a new device and transport on the same guest memory, with
// its own sink, line and event loop (so the saved device, still there, never runs again).
struct RestoredConsole {
    explicit RestoredConsole(GuestMemory const& memory) {
        auto owned = std::make_unique<ConsoleDevice>(sink);
        device = owned.get();
        transport = *MmioTransport::create("console", std::move(owned), memory, line, loop);
        driver.emplace(*transport, loop);
    }

    Expected<void> restore(std::span<std::byte const> payload) {
        return testing::restore_transport(*transport, payload);
    }

    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    std::shared_ptr<CollectingSink> sink = std::make_shared<CollectingSink>();
    ConsoleDevice* device { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
};

std::vector<std::byte> save(MmioTransport const& transport) {
    StateWriter writer;
    auto const saved = transport.save_state(writer);
    EXPECT_TRUE(saved) << saved.error().message();
    return writer.payload();
}

// The console's section, read and written field by field, to build states that do not fit.
struct ConsoleSection {
    std::vector<std::byte> pending;
    bool active { false };
    QueueState receive;
    QueueState transmit;
    bool held { false };
    uint16_t head { 0 };
    uint64_t offset { 0 };

    static ConsoleSection decode(StateReader& reader) {
        ConsoleSection section;
        EXPECT_TRUE(reader.begin_section(ConsoleDevice::SECTION, ConsoleDevice::VERSION));
        section.pending = *reader.bytes("pending_input", 1 << 20);
        section.active = *reader.boolean("active");
        if (section.active) {
            section.receive = *QueueState::decode(reader, MAX_QUEUE_SIZE);
            section.transmit = *QueueState::decode(reader, MAX_QUEUE_SIZE);
            section.held = *reader.boolean("held");
            if (section.held) {
                section.head = *reader.u16("head");
                section.offset = *reader.u64("offset");
            }
        }
        EXPECT_TRUE(reader.end_section());
        return section;
    }
    void encode(StateWriter& writer) const {
        writer.begin_section(ConsoleDevice::SECTION, ConsoleDevice::VERSION);
        writer.bytes(pending);
        writer.boolean(active);
        if (active) {
            receive.encode(writer);
            transmit.encode(writer);
            writer.boolean(held);
            if (held) {
                writer.u16(head);
                writer.u64(offset);
            }
        }
        writer.end_section();
    }
};

class ConsoleStateTest : public ConsoleDeviceTest {
protected:
    // Input the driver has no buffer for yet, and a 1.5 MiB transmit chain of which one slice
    // (1 MiB) has been copied out: both are held by the device when it is saved.
    void hold_input_and_half_a_chain() {
        start();
        EXPECT_EQ(console->receive(input("typed ahead")), 11u);
        auto const buffer = transmit.allocate(CHAIN_PART);
        std::vector<std::byte> pattern(CHAIN_PART);
        for (size_t i = 0; i < pattern.size(); ++i)
            pattern[i] = static_cast<std::byte>(i % 251);
        ASSERT_TRUE(memory.write(buffer, pattern));
        for (int i = 0; i < 3; ++i)
            expected_output.append(reinterpret_cast<char const*>(pattern.data()), pattern.size());
        std::vector<testing::DriverBuffer> aliases(3, testing::DriverBuffer { buffer, CHAIN_PART, false });
        held_head = transmit.add_chain(aliases);
        driver->notify(1);
        ASSERT_TRUE(loop.run_once(std::chrono::milliseconds(0))); // one wake-up: one slice
        ASSERT_EQ(sink->text.size(), WorkBudget::DEFAULT_BYTES);
        ASSERT_FALSE(transmit.pop_used()) << "the chain is still being copied";
    }

    static constexpr uint32_t CHAIN_PART = 512 * 1024;
    std::string expected_output;
    uint16_t held_head { 0 };
};

TEST_F(ConsoleStateTest, RoundTripKeepsPendingInputAndAHeldTransmitChainWhichFinishesAfterRestore) {
    hold_input_and_half_a_chain();
    auto const saved = save(*transport);

    RestoredConsole restored(memory);
    auto const result = restored.restore(saved);
    ASSERT_TRUE(result) << result.error().message();
    EXPECT_EQ(save(*restored.transport), saved);
    EXPECT_TRUE(restored.device->has_pending_input());

    // The held chain goes on from its offset: nothing lost, nothing repeated.
    restored.driver->run_event_loop();
    EXPECT_EQ(restored.sink->text.size(), 3u * CHAIN_PART - WorkBudget::DEFAULT_BYTES);
    EXPECT_TRUE(sink->text + restored.sink->text == expected_output) << "output differs after the restore";
    auto const used = transmit.pop_used();
    ASSERT_TRUE(used);
    EXPECT_EQ(used->id, held_head);

    // The pending input goes to the first receive buffer the driver offers.
    auto const buffer = receive.writable_buffer(32);
    receive.add_chain({ buffer });
    restored.driver->notify(0);
    restored.driver->run_event_loop();
    auto const delivered = receive.pop_used();
    ASSERT_TRUE(delivered);
    EXPECT_EQ(delivered->length, 11u);
    EXPECT_EQ(receive.read(buffer.address, 11), bytes_of("typed ahead"));
    EXPECT_FALSE(restored.device->has_pending_input());
    EXPECT_EQ(restored.driver->read32(0x60) & INTERRUPT_USED_BUFFER, INTERRUPT_USED_BUFFER);
    EXPECT_GE(std::count(restored.line.levels.begin(), restored.line.levels.end(), true), 1);
}

TEST_F(ConsoleStateTest, PendingInputIsDeliveredWhenTheRestoredDeviceIsPolled) {
    start();
    EXPECT_EQ(console->receive(input("abc")), 3u);
    auto const buffer = receive.writable_buffer(8);
    receive.add_chain({ buffer }); // offered, not yet notified when the VM is saved
    auto const saved = save(*transport);
    RestoredConsole restored(memory);
    ASSERT_TRUE(restored.restore(saved));
    restored.driver->run_event_loop();
    auto const delivered = receive.pop_used();
    ASSERT_TRUE(delivered) << "the restore polls the receive queue";
    EXPECT_EQ(receive.read(buffer.address, 3), bytes_of("abc"));
}

TEST_F(ConsoleStateTest, InputOfAnInactiveDeviceIsKeptAcrossRestore) {
    EXPECT_EQ(console->receive(input("early")), 5u);
    auto const saved = save(*transport);
    RestoredConsole restored(memory);
    ASSERT_TRUE(restored.restore(saved));
    EXPECT_EQ(save(*restored.transport), saved);
    ASSERT_EQ(restored.driver->initialize(0, { &receive, &transmit }) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    auto const buffer = receive.writable_buffer(8);
    receive.add_chain({ buffer });
    restored.driver->notify(0);
    restored.driver->run_event_loop();
    ASSERT_TRUE(receive.pop_used());
    EXPECT_EQ(receive.read(buffer.address, 5), bytes_of("early"));
}

TEST_F(ConsoleStateTest, DeviceStateThatDoesNotFitIsRefusedNamingTheFieldAndChangesNothing) {
    hold_input_and_half_a_chain();
    auto const saved = save(*transport);
    StateReader reader(saved);
    auto const transport_state = *MmioTransportState::decode(reader);
    auto const good = ConsoleSection::decode(reader);
    ASSERT_TRUE(good.held);

    auto const expect_refused = [&](ConsoleSection const& section, std::string_view field) {
        StateWriter writer;
        transport_state.encode(writer);
        section.encode(writer);
        RestoredConsole target(memory);
        auto const before = target.transport->save();
        auto const refused = target.restore(writer.payload());
        ASSERT_FALSE(refused) << field;
        EXPECT_NE(refused.error().message().find(field), std::string::npos) << refused.error().message();
        EXPECT_EQ(target.transport->save(), before);
        EXPECT_FALSE(target.device->has_pending_input()) << "no input was taken from a refused state";
        target.driver->run_event_loop();
        EXPECT_TRUE(target.sink->text.empty()) << "no chain was taken from a refused state";
    };

    auto section = good;
    section.head = static_cast<uint16_t>(good.head + 1);
    expect_refused(section, "virtio-console/transmit_head");
    section = good;
    section.offset = 3u * CHAIN_PART;
    expect_refused(section, "virtio-console/transmit_offset");
    section = good;
    section.held = false;
    expect_refused(section, "virtio-console/transmit_held");
    section = good;
    section.pending.resize(ConsoleDevice::MAX_PENDING_INPUT + 1);
    expect_refused(section, "virtio-console/pending_input: length 65537");
    section = good;
    section.active = false;
    expect_refused(section, "virtio-console/active");
}

} // namespace
} // namespace kvmm::virtio

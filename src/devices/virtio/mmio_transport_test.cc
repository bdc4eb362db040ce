#include "devices/virtio/mmio_transport.h"

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace kvmm::virtio {
namespace {

using testing::DriverQueue;
using testing::MmioDriver;

// A device that records what the transport asks of it; each notification returns every
// available chain with 1 byte "written".
class ProbeDevice final : public VirtioDevice {
public:
    DeviceType type() const override { return DeviceType::Entropy; }
    uint64_t features() const override { return feature_bit(3) | feature_bit(FEATURE_RING_EVENT_IDX); }
    std::span<uint16_t const> queue_max_sizes() const override { return m_sizes; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override {
        for (size_t i = 0; i < data.size(); ++i)
            data[i] = static_cast<uint8_t>(offset + i);
    }
    Expected<void> activate(ActivationContext context) override {
        ++activations;
        if (refuse_activation)
            return Error("refused");
        m_context = std::move(context);
        return {};
    }
    void process_queue(size_t index) override {
        ++processed;
        if (!m_context || !m_context->queues[index])
            return;
        auto& queue = *m_context->queues[index];
        for (int served = 0;; ++served) {
            if (chains_per_wakeup > 0 && served == chains_per_wakeup) {
                m_context->reschedule(index); // the rest on a later round
                break;
            }
            auto popped = queue.pop(m_chain);
            if (!popped) {
                m_context->fail(popped.error());
                return;
            }
            if (!*popped)
                break;
            (void)queue.add_used(m_chain.head(), 1);
        }
        m_context->interrupt->signal_used_buffer();
    }
    void reset() override {
        ++resets;
        m_context.reset();
    }

    int activations { 0 };
    int processed { 0 };
    int resets { 0 };
    bool refuse_activation { false };
    int chains_per_wakeup { 0 }; // 0: no limit

private:
    uint16_t m_sizes[2] { 64, 16 };
    std::optional<ActivationContext> m_context;
    DescriptorChain m_chain;
};

class MmioTransportTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto device = std::make_unique<ProbeDevice>();
        probe = device.get();
        transport = *MmioTransport::create("probe", std::move(device), memory, line, loop);
        driver.emplace(*transport, loop);
    }

    int pulses() const { return static_cast<int>(std::count(line.levels.begin(), line.levels.end(), true)); }

    // Reset, VERSION_1, queue 0 of `queue_size` entries (its addresses as the registers hold
    // them) and DRIVER_OK, without letting the event loop run the commands this posts.
    void reset_and_set_driver_ok(uint32_t queue_size) {
        driver->write32(0x70, 0);
        driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        driver->write32(0x24, 1);
        driver->write32(0x20, 1);
        driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        driver->write32(0x30, 0);
        driver->write32(0x38, queue_size);
        driver->write32(0x44, 1);
        driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    }

    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 1 << 20 } });
    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    ProbeDevice* probe { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
    DriverQueue queue0 { memory, GuestAddress(0x10000), 64 };
};

TEST_F(MmioTransportTest, IdentifiesAsAModernVirtioMmioDevice) {
    EXPECT_EQ(driver->read32(0x000), 0x74726976u);
    EXPECT_EQ(driver->read32(0x004), 2u);
    EXPECT_EQ(driver->read32(0x008), 4u);
    auto const features = driver->device_features();
    EXPECT_TRUE(has_feature(features, FEATURE_VERSION_1));
    EXPECT_TRUE(has_feature(features, 3));
    driver->write32(0x30, 1);
    EXPECT_EQ(driver->read32(0x034), 16u);
    driver->write32(0x30, 7);
    EXPECT_EQ(driver->read32(0x034), 0u) << "no queue 7";
}

TEST_F(MmioTransportTest, InitializationActivatesTheDeviceAndNotificationsReachIt) {
    uint32_t const status = driver->initialize(feature_bit(3), { &queue0 });
    EXPECT_EQ(status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    EXPECT_EQ(probe->activations, 1);
    queue0.add_chain({ queue0.writable_buffer(4) });
    driver->notify(0);
    driver->run_event_loop();
    auto const used = queue0.pop_used();
    ASSERT_TRUE(used);
    EXPECT_EQ(used->length, 1u);
    EXPECT_GE(pulses(), 1);
    EXPECT_EQ(driver->read32(0x060) & INTERRUPT_USED_BUFFER, INTERRUPT_USED_BUFFER);
    driver->write32(0x064, INTERRUPT_USED_BUFFER);
    EXPECT_EQ(driver->read32(0x060), 0u);
}

TEST_F(MmioTransportTest, BufferOfferedBeforeActivationIsServedAtActivation) {
    queue0.add_chain({ queue0.writable_buffer(4) });
    driver->initialize(0, { &queue0 });
    EXPECT_TRUE(queue0.pop_used()) << "the transport polls every queue once after activating";
}

TEST_F(MmioTransportTest, FeaturesWithoutVersion1AreRefused) {
    driver->write32(0x70, STATUS_ACKNOWLEDGE);
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    driver->write32(0x24, 0);
    driver->write32(0x20, 1u << 3);
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    EXPECT_EQ(driver->read32(0x70) & STATUS_FEATURES_OK, 0u);
}

TEST_F(MmioTransportTest, FeaturesTheDeviceDidNotOfferAreRefused) {
    uint32_t const status = driver->initialize(feature_bit(5), { &queue0 });
    EXPECT_EQ(status & STATUS_FEATURES_OK, 0u);
    EXPECT_EQ(probe->activations, 0);
}

TEST_F(MmioTransportTest, DriverOkWrittenWithARefusedFeaturesOkIsIgnored) {
    // FEATURES_OK and DRIVER_OK in one write, after a refused FEATURES_OK: the device must not
    // be activated with the features it refused.
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    driver->write32(0x24, 1);
    driver->write32(0x20, 1);
    driver->write32(0x24, 0);
    driver->write32(0x20, 1u << 5); // not offered
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    driver->write32(0x30, 0);
    driver->write32(0x44, 1);
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    driver->run_event_loop();
    EXPECT_EQ(driver->read32(0x70), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    EXPECT_EQ(probe->activations, 0);
}

TEST_F(MmioTransportTest, DriverOkWithoutFeaturesOkIsIgnored) {
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
    driver->run_event_loop();
    EXPECT_EQ(driver->read32(0x70), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    EXPECT_EQ(probe->activations, 0);
}

TEST_F(MmioTransportTest, QueueSizeChangeAfterDriverOkIsIgnored) {
    driver->initialize(0, { &queue0 });
    driver->write32(0x30, 0);
    driver->write32(0x38, 8);
    driver->write32(0x80, 0x5000);
    // The device keeps using the queue it was given.
    queue0.add_chain({ queue0.writable_buffer(4) });
    driver->notify(0);
    driver->run_event_loop();
    EXPECT_TRUE(queue0.pop_used());
    EXPECT_EQ(driver->read32(0x70) & STATUS_DEVICE_NEEDS_RESET, 0u);
}

TEST_F(MmioTransportTest, FeatureChangeAfterFeaturesOkIsIgnored) {
    driver->initialize(feature_bit(3), { &queue0 });
    driver->write32(0x24, 0);
    driver->write32(0x20, 0);
    driver->write32(0x70, 0);
    // Renegotiating after a reset works and starts from zero.
    EXPECT_EQ(driver->initialize(0, { &queue0 }) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
}

TEST_F(MmioTransportTest, InvalidQueueLayoutPutsTheDeviceInNeedsReset) {
    driver->write32(0x30, 0);
    auto bad = DriverQueue(memory, GuestAddress(0x10000), 64);
    uint32_t status = 0;
    {
        // Queue size 48 is not a power of two.
        reset_and_set_driver_ok(48);
        driver->run_event_loop();
        status = driver->read32(0x70);
    }
    EXPECT_EQ(status & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
    EXPECT_EQ(probe->activations, 0);
    EXPECT_EQ(driver->read32(0x060) & INTERRUPT_CONFIG_CHANGE, INTERRUPT_CONFIG_CHANGE);
    // A reset clears it and the device works again.
    EXPECT_EQ(driver->initialize(0, { &bad }) & STATUS_DEVICE_NEEDS_RESET, 0u);
    EXPECT_EQ(probe->activations, 1);
}

TEST_F(MmioTransportTest, MalformedChainPutsTheDeviceInNeedsResetUntilReset) {
    driver->initialize(0, { &queue0 });
    queue0.set_available_index(200); // far ahead of a 64-entry queue
    driver->notify(0);
    driver->run_event_loop();
    EXPECT_EQ(driver->read32(0x70) & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
    int const processed = probe->processed;
    driver->notify(0);
    driver->run_event_loop();
    EXPECT_EQ(probe->processed, processed) << "a failed device is not called again until reset";
    driver->write32(0x70, 0);
    driver->run_event_loop();
    EXPECT_EQ(probe->resets, 1);
    EXPECT_EQ(driver->read32(0x70), 0u);
}

TEST_F(MmioTransportTest, RefusedActivationPutsTheDeviceInNeedsReset) {
    probe->refuse_activation = true;
    uint32_t const status = driver->initialize(0, { &queue0 });
    EXPECT_EQ(status & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
}

TEST_F(MmioTransportTest, ResetBeforeTheEventLoopRunsDropsTheStaleActivation) {
    driver->initialize(0, { &queue0 }); // activation 1 ran
    // DRIVER_OK then an immediate reset, with no event loop turn in between.
    driver->write32(0x70, 0);
    driver->write32(0x70, STATUS_ACKNOWLEDGE);
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    driver->write32(0x24, 1);
    driver->write32(0x20, 1);
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    driver->write32(0x70, 0);
    driver->run_event_loop();
    EXPECT_EQ(probe->activations, 1);
    EXPECT_EQ(probe->resets, 1);
}

TEST_F(MmioTransportTest, ResetAndActivationLoopQueuesAtMostTwoCommands) {
    // A vCPU resetting and re-activating the device faster than the event loop runs: the queue
    // of commands must not grow (each activation carries its queues).
    for (int round = 0; round < 10000; ++round) {
        reset_and_set_driver_ok(64);
        ASSERT_LE(transport->pending_commands(), 2u);
    }
    EXPECT_GE(transport->commands_coalesced(), 19998u);
    EXPECT_EQ(transport->commands_posted(), 20000u);
    driver->run_event_loop();
    EXPECT_EQ(probe->activations, 1) << "only the last activation is still current";
    EXPECT_EQ(transport->activations(), 1u);
    EXPECT_EQ(transport->pending_commands(), 0u);
}

TEST_F(MmioTransportTest, DeviceThatStopsAtItsBudgetIsCalledAgainAfterOtherReadyWork) {
    probe->chains_per_wakeup = 4;
    driver->initialize(0, { &queue0 });
    for (int i = 0; i < 10; ++i)
        queue0.add_chain({ queue0.writable_buffer(8) });
    // Another fd that is ready at the same time, like a signalfd with SIGTERM pending.
    auto other = *EventFd::create();
    int other_served = 0;
    ASSERT_TRUE(loop.add(other.fd(), [&] {
        (void)other.consume();
        ++other_served;
    }));
    ASSERT_TRUE(other.signal());
    driver->notify(0);
    int used_before_other = -1;
    for (int round = 0; round < 10 && used_before_other < 0; ++round) {
        (void)loop.run_once(std::chrono::milliseconds(0));
        if (other_served > 0)
            used_before_other = static_cast<int>(queue0.used_index());
    }
    EXPECT_GE(used_before_other, 0) << "the other fd was never served";
    EXPECT_LE(used_before_other, 8) << "the device drained everything before the other fd got a turn";
    driver->run_event_loop();
    EXPECT_EQ(queue0.used_index(), 10u) << "nothing is dropped, only spread over rounds";
    loop.remove(other.fd());
}

TEST_F(MmioTransportTest, StatusBitsCannotBeClearedOrSkipped) {
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    driver->write32(0x70, STATUS_ACKNOWLEDGE);
    EXPECT_EQ(driver->read32(0x70), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    driver->write32(0x70, 0);
    driver->write32(0x70, STATUS_DRIVER);
    EXPECT_EQ(driver->read32(0x70), 0u) << "DRIVER before ACKNOWLEDGE";
}

TEST_F(MmioTransportTest, StatusWriteWithReservedBitsIsIgnored) {
    driver->write32(0x70, STATUS_ACKNOWLEDGE);
    for (uint32_t const reserved : { 0x10u, 0x20u, 0x100u, 0x80000000u }) {
        driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | reserved);
        EXPECT_EQ(driver->read32(0x70), STATUS_ACKNOWLEDGE) << "reserved bit " << reserved;
    }
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    EXPECT_EQ(driver->read32(0x70), STATUS_ACKNOWLEDGE | STATUS_DRIVER) << "a clean write still works";
}

TEST_F(MmioTransportTest, DriverCannotSetDeviceNeedsReset) {
    driver->write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DEVICE_NEEDS_RESET);
    EXPECT_EQ(driver->read32(0x70), STATUS_ACKNOWLEDGE);
}

TEST_F(MmioTransportTest, OddWidthRegisterAccessIsIgnoredAndReadsAllOnes) {
    uint8_t two[2] = { 0, 0 };
    transport->read(0x000, two);
    EXPECT_EQ(two[0], 0xff);
    transport->write(0x070, std::span<uint8_t const>(two));
    EXPECT_EQ(driver->read32(0x70), 0u);
    EXPECT_EQ(driver->read32(0x0b0), 0xffffffffu) << "no shared memory region";
}

TEST_F(MmioTransportTest, ConfigSpaceAccessesReachTheDevice) {
    uint8_t bytes[3] {};
    transport->read(0x105, bytes);
    EXPECT_EQ(bytes[0], 5);
    EXPECT_EQ(bytes[2], 7);
}

TEST_F(MmioTransportTest, NotificationOfAMissingQueueIsHarmless) {
    driver->initialize(0, { &queue0 });
    driver->notify(9);
    driver->run_event_loop();
    EXPECT_EQ(driver->read32(0x70) & STATUS_DEVICE_NEEDS_RESET, 0u);
}

} // namespace
} // namespace kvmm::virtio

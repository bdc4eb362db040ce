// The virtio-mmio transport's saved state: save -> restore into a new transport -> save gives
// the same bytes, the restored device carries on, and bad state is refused with nothing changed.
#include "devices/virtio/mmio_transport.h"

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace kvmm::virtio {
namespace {

using testing::DriverQueue;
using testing::MmioDriver;

// A device that returns every available chain with 1 byte "written" and saves its queues'
// progress, so the transport's part of saving and restoring is seen on its own.
class StateProbeDevice final : public VirtioDevice {
public:
    static constexpr std::string_view SECTION = "probe";

    DeviceType type() const override { return DeviceType::Entropy; }
    uint64_t features() const override { return feature_bit(3) | feature_bit(FEATURE_RING_EVENT_IDX); }
    std::span<uint16_t const> queue_max_sizes() const override { return m_sizes; }
    void read_config(uint64_t, std::span<uint8_t> data) override { std::fill(data.begin(), data.end(), 0); }
    Expected<void> activate(ActivationContext context) override {
        ++activations;
        m_context = std::move(context);
        return {};
    }
    void process_queue(size_t index) override {
        ++processed;
        if (!m_context || !m_context->queues[index])
            return;
        auto& queue = *m_context->queues[index];
        bool used_any = false;
        while (true) {
            auto popped = queue.pop(m_chain);
            if (!popped) {
                auto context = std::move(*m_context);
                m_context.reset();
                context.fail(popped.error());
                return;
            }
            if (!*popped)
                break;
            (void)queue.add_used(m_chain.head(), 1);
            used_any = true;
        }
        if (used_any)
            m_context->interrupt->signal_used_buffer();
    }
    void reset() override { m_context.reset(); }

    Expected<void> save_state(StateWriter& writer) const override {
        writer.begin_section(SECTION, 1);
        writer.boolean(m_context.has_value());
        if (m_context) {
            for (auto const& queue : m_context->queues) {
                writer.boolean(queue.has_value());
                if (queue)
                    queue->save().encode(writer);
            }
        }
        writer.end_section();
        return {};
    }
    Expected<void> restore_state(StateReader& reader, std::optional<ActivationContext> context) override {
        ++restores;
        TRY(reader.begin_section(SECTION, 1));
        bool const active = TRY(reader.boolean("active"));
        if (active != context.has_value())
            return Error("probe/active: does not match the transport");
        if (context) {
            for (auto& queue : context->queues) {
                bool const present = TRY(reader.boolean("present"));
                if (present != queue.has_value())
                    return Error("probe/present: does not match the transport");
                if (!queue)
                    continue;
                auto const state = TRY(QueueState::decode(reader, queue->size()));
                TRY(queue->restore(state));
            }
        }
        TRY(reader.end_section());
        restored_with_context = context.has_value();
        m_context = std::move(context);
        return {};
    }

    int activations { 0 };
    int processed { 0 };
    int restores { 0 };
    bool restored_with_context { false };

private:
    uint16_t m_sizes[2] { 64, 16 };
    std::optional<ActivationContext> m_context;
    DescriptorChain m_chain;
};

// One transport with its device, driver and interrupt line; several share guest memory and the
// event loop, as the saved machine and the restored one would in turn.
struct Bench {
    Bench(GuestMemory const& memory, EventLoop& loop) {
        auto owned = std::make_unique<StateProbeDevice>();
        device = owned.get();
        transport = *MmioTransport::create("probe", std::move(owned), memory, line, loop);
        driver.emplace(*transport, loop);
    }

    int pulses() const { return static_cast<int>(std::count(line.levels.begin(), line.levels.end(), true)); }

    RecordingInterruptLine line;
    StateProbeDevice* device { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
};

class MmioTransportStateTest : public ::testing::Test {
protected:
    std::vector<std::byte> save(Bench& bench) {
        StateWriter writer;
        auto const saved = bench.transport->save_state(writer);
        EXPECT_TRUE(saved) << saved.error().message();
        return writer.payload();
    }

    Expected<void> restore(Bench& bench, std::span<std::byte const> payload) {
        return testing::restore_transport(*bench.transport, payload);
    }

    // `state` followed by the source bench's device section: a blob with one field changed.
    std::vector<std::byte> blob(MmioTransportState const& state) {
        StateWriter writer;
        state.encode(writer);
        EXPECT_TRUE(source.device->save_state(writer));
        return writer.payload();
    }

    // The source device active on queue 0 (64 entries) and queue 1 (16), three chains served,
    // one interrupt not yet acknowledged.
    void bring_up_source() {
        ASSERT_EQ(source.driver->initialize(feature_bit(3) | feature_bit(FEATURE_RING_EVENT_IDX), { &queue0, &queue1 }),
                  STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        for (int i = 0; i < 3; ++i)
            queue0.add_chain({ queue0.writable_buffer(8) });
        source.driver->notify(0);
        source.driver->run_event_loop();
        for (int i = 0; i < 3; ++i)
            ASSERT_TRUE(queue0.pop_used());
        ASSERT_EQ(source.transport->status() & STATUS_DEVICE_NEEDS_RESET, 0u);
    }

    // Expects `payload` to be refused by a fresh target with `field` in the message, and the
    // target to be exactly as before (and still usable).
    void expect_refused(std::span<std::byte const> payload, std::string_view field) {
        Bench target(memory, loop);
        auto const before = target.transport->save();
        auto const refused = restore(target, payload);
        ASSERT_FALSE(refused) << "expected a refusal naming " << field;
        EXPECT_NE(refused.error().message().find(field), std::string::npos) << refused.error().message();
        EXPECT_EQ(target.transport->save(), before) << refused.error().message();
        EXPECT_FALSE(target.device->restored_with_context);
        DriverQueue fresh(memory, GuestAddress(0x60000), 64);
        EXPECT_EQ(target.driver->initialize(0, { &fresh }) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    }

    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 1 << 20 } });
    EventLoop loop = *EventLoop::create();
    Bench source { memory, loop };
    DriverQueue queue0 { memory, GuestAddress(0x10000), 64 };
    DriverQueue queue1 { memory, GuestAddress(0x30000), 16 };
};

TEST_F(MmioTransportStateTest, ActiveDeviceRoundTripsToIdenticalBytesAndServesNewChains) {
    bring_up_source();
    auto const saved = save(source);

    Bench restored(memory, loop);
    auto const result = restore(restored, saved);
    ASSERT_TRUE(result) << result.error().message();
    EXPECT_TRUE(restored.device->restored_with_context);
    EXPECT_EQ(restored.device->activations, 0) << "restored, not activated again";
    EXPECT_EQ(save(restored), saved);
    EXPECT_EQ(restored.transport->save(), source.transport->save());
    EXPECT_EQ(restored.driver->read32(0x70),
              STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    EXPECT_EQ(restored.driver->read32(0x60), INTERRUPT_USED_BUFFER) << "the unacknowledged interrupt is kept";
    EXPECT_EQ(restored.pulses(), 0) << "restoring the status does not pulse the wire again";

    restored.driver->write32(0x64, INTERRUPT_USED_BUFFER);
    auto const buffer = queue0.writable_buffer(8);
    uint16_t const head = queue0.add_chain({ buffer });
    restored.driver->notify(0);
    restored.driver->run_event_loop();
    auto const used = queue0.pop_used();
    ASSERT_TRUE(used) << "the restored device serves a chain offered after the restore";
    EXPECT_EQ(used->id, head);
    EXPECT_EQ(used->length, 1u);
    EXPECT_FALSE(queue0.pop_used()) << "chains served before the save are not served again";
    EXPECT_EQ(queue0.used_index(), 4u);
    EXPECT_GE(restored.pulses(), 1);
    EXPECT_EQ(restored.driver->read32(0x60) & INTERRUPT_USED_BUFFER, INTERRUPT_USED_BUFFER);
}

TEST_F(MmioTransportStateTest, ChainOfferedButNotNotifiedBeforeTheSaveIsServedAfterRestore) {
    bring_up_source();
    uint16_t const head = queue1.add_chain({ queue1.writable_buffer(4) }); // no notification
    auto const saved = save(source);
    Bench restored(memory, loop);
    ASSERT_TRUE(restore(restored, saved));
    EXPECT_FALSE(queue1.pop_used()) << "nothing runs during the restore itself";
    restored.driver->run_event_loop();
    auto const used = queue1.pop_used();
    ASSERT_TRUE(used) << "the restore polls the device's queues once";
    EXPECT_EQ(used->id, head);
}

TEST_F(MmioTransportStateTest, StateMidNegotiationRoundTripsAndNegotiationGoesOn) {
    auto& driver = *source.driver;
    driver.write32(0x70, STATUS_ACKNOWLEDGE);
    driver.write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    driver.write32(0x24, 1);
    driver.write32(0x20, 1); // VERSION_1
    driver.write32(0x30, 1);
    driver.write32(0x38, 8);
    driver.write32(0x80, 0x30000);
    auto const saved = save(source);

    Bench restored(memory, loop);
    auto const result = restore(restored, saved);
    ASSERT_TRUE(result) << result.error().message();
    EXPECT_EQ(restored.device->restores, 1);
    EXPECT_FALSE(restored.device->restored_with_context);
    EXPECT_EQ(save(restored), saved);
    EXPECT_EQ(restored.driver->read32(0x70), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    EXPECT_EQ(restored.driver->read32(0x34), 16u) << "queue 1 is still selected";

    // The driver finishes on the restored transport where it stopped.
    auto& next = *restored.driver;
    next.write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    ASSERT_EQ(next.read32(0x70) & STATUS_FEATURES_OK, STATUS_FEATURES_OK);
    DriverQueue small(memory, GuestAddress(0x30000), 8);
    next.write32(0x90, static_cast<uint32_t>(small.config().available_ring.value()));
    next.write32(0xa0, static_cast<uint32_t>(small.config().used_ring.value()));
    next.write32(0x44, 1);
    next.write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    next.run_event_loop();
    EXPECT_EQ(restored.device->activations, 1);
    small.add_chain({ small.writable_buffer(4) });
    next.notify(1);
    next.run_event_loop();
    EXPECT_TRUE(small.pop_used());
}

TEST_F(MmioTransportStateTest, FailedDeviceRoundTripsAndStaysFailedUntilReset) {
    bring_up_source();
    queue0.set_available_index(200); // far ahead of a 64-entry queue
    source.driver->notify(0);
    source.driver->run_event_loop();
    ASSERT_EQ(source.transport->status() & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
    auto const saved = save(source);

    Bench restored(memory, loop);
    ASSERT_TRUE(restore(restored, saved));
    EXPECT_FALSE(restored.device->restored_with_context);
    EXPECT_EQ(save(restored), saved);
    int const processed = restored.device->processed;
    restored.driver->notify(0);
    restored.driver->run_event_loop();
    EXPECT_EQ(restored.device->processed, processed) << "a failed device is not called until reset";
    DriverQueue fresh(memory, GuestAddress(0x60000), 64);
    EXPECT_EQ(restored.driver->initialize(0, { &fresh }),
              STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
}

TEST_F(MmioTransportStateTest, SavingWithADriverCommandStillQueuedIsRefusedUntilItRuns) {
    auto& driver = *source.driver;
    driver.write32(0x70, STATUS_ACKNOWLEDGE);
    driver.write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    driver.write32(0x24, 1);
    driver.write32(0x20, 1);
    driver.write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    driver.write32(0x30, 0);
    driver.write32(0x38, 64);
    driver.write32(0x44, 1);
    driver.write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    StateWriter writer;
    auto const refused = source.transport->save_state(writer);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("not run yet"), std::string::npos) << refused.error().message();
    source.transport->run_pending_commands();
    EXPECT_EQ(source.device->activations, 1);
    StateWriter settled;
    EXPECT_TRUE(source.transport->save_state(settled));
}

TEST_F(MmioTransportStateTest, RestoreIntoATransportInUseIsRefused) {
    bring_up_source();
    auto const saved = save(source);
    auto const before = source.transport->save();
    auto const refused = restore(source, saved);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("in use"), std::string::npos) << refused.error().message();
    EXPECT_EQ(source.transport->save(), before);
}

TEST_F(MmioTransportStateTest, TruncatedStateIsRefusedAtEveryLength) {
    bring_up_source();
    auto const saved = save(source);
    for (size_t length = 0; length < saved.size(); ++length) {
        Bench target(memory, loop);
        auto const before = target.transport->save();
        auto const refused = restore(target, std::span(saved).first(length));
        ASSERT_FALSE(refused) << "a state cut to " << length << " bytes was accepted";
        EXPECT_NE(refused.error().message().find("saved state"), std::string::npos) << refused.error().message();
        EXPECT_EQ(target.transport->save(), before) << length;
    }
    // The transport's own section cut short: the section is named.
    MmioTransportState state = source.transport->save();
    StateWriter writer;
    state.encode(writer);
    auto const transport_only = writer.payload();
    Bench target(memory, loop);
    auto const refused = restore(target, std::span(transport_only).first(transport_only.size() - 10));
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("virtio-mmio"), std::string::npos) << refused.error().message();
}

TEST_F(MmioTransportStateTest, WrongVersionIsRefused) {
    bring_up_source();
    auto bad = save(source);
    // The section header: u16 name length, the name, then the u32 version.
    size_t const version_at = 2 + MmioTransportState::SECTION.size();
    bad[version_at] = std::byte { 2 };
    expect_refused(bad, "virtio-mmio (section): version 2");
}

TEST_F(MmioTransportStateTest, QueueSizeNotAPowerOfTwoIsRefused) {
    bring_up_source();
    auto state = source.transport->save();
    state.queues[0].size = 48;
    expect_refused(blob(state), "virtio-mmio/queue0.size");
    state.queues[0].size = 128;
    expect_refused(blob(state), "virtio-mmio/queue0.size: 128 is more than the maximum 64");
}

TEST_F(MmioTransportStateTest, DriverFeaturesNotOfferedAreRefused) {
    bring_up_source();
    auto state = source.transport->save();
    state.driver_features |= feature_bit(5);
    expect_refused(blob(state), "virtio-mmio/driver_features");
    state = source.transport->save();
    state.driver_features &= ~feature_bit(FEATURE_VERSION_1);
    expect_refused(blob(state), "virtio-mmio/driver_features");
}

TEST_F(MmioTransportStateTest, MoreQueuesThanTheDeviceHasAreRefused) {
    bring_up_source();
    auto state = source.transport->save();
    state.queues.push_back(state.queues[1]);
    expect_refused(blob(state), "virtio-mmio/queue_count: 3 but this device has 2 queues");
    state.queues.resize(MmioTransportState::MAX_QUEUES + 1);
    expect_refused(blob(state), "virtio-mmio/queue_count: 65 is outside [0, 64]");
}

TEST_F(MmioTransportStateTest, ImpossibleStatusAndActivationCombinationsAreRefused) {
    bring_up_source();
    auto const good = source.transport->save();
    auto state = good;
    state.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER_OK;
    expect_refused(blob(state), "virtio-mmio/status");
    state = good;
    state.status |= 0x10;
    expect_refused(blob(state), "virtio-mmio/status");
    state = good;
    state.active = false;
    expect_refused(blob(state), "virtio-mmio/active");
    state = good;
    state.failed = true;
    expect_refused(blob(state), "virtio-mmio/failed");
    state = good;
    state.interrupt_status = 4;
    expect_refused(blob(state), "virtio-mmio/interrupt_status");
    state = good;
    state.queues[1].max_size = 32;
    expect_refused(blob(state), "virtio-mmio/queue1.max_size");
    state = good;
    state.device_type = static_cast<uint32_t>(DeviceType::Block);
    expect_refused(blob(state), "virtio-mmio/device_type");
}

TEST_F(MmioTransportStateTest, QueueLayoutTheQueueRefusesIsRefusedNamingTheQueue) {
    bring_up_source();
    auto state = source.transport->save();
    state.queues[1].descriptor_table = 0x30008; // not 16-byte aligned
    expect_refused(blob(state), "virtio-mmio: queue 1");
}

TEST_F(MmioTransportStateTest, DeviceSectionRefusalLeavesTheTransportUnchanged) {
    bring_up_source();
    auto state = source.transport->save();
    StateWriter writer;
    state.encode(writer);
    writer.begin_section("another-device", 1);
    writer.end_section();
    expect_refused(writer.payload(), "another-device");
}

} // namespace
} // namespace kvmm::virtio

#include "devices/virtio/virtio_device_base.h"

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/driver_queue.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvmm::virtio {
namespace {

using testing::DriverQueue;

// A device with one queue that exposes the base's helpers and records what they did.
class ProbeDevice final : public VirtioDeviceBase {
public:
    DeviceType type() const override { return DeviceType::Entropy; }
    uint64_t features() const override { return feature_bit(FEATURE_RING_EVENT_IDX); }
    std::span<uint16_t const> queue_max_sizes() const override { return m_sizes; }
    void read_config(uint64_t, std::span<uint8_t>) override {}
    Expected<void> activate(ActivationContext context) override {
        take_context(std::move(context));
        return {};
    }
    void process_queue(size_t) override {}
    void reset() override { drop_context(); }

    using VirtioDeviceBase::active;
    using VirtioDeviceBase::context;
    using VirtioDeviceBase::fail;
    using VirtioDeviceBase::fail_on_error;
    using VirtioDeviceBase::guest_error;
    using VirtioDeviceBase::interrupt_if_wanted;
    using VirtioDeviceBase::yield_turn;

    // What on_failed() saw: whether the context was already gone when it ran.
    std::vector<bool> failed_while_active;

private:
    void on_failed() override { failed_while_active.push_back(active()); }
    std::string log_name() const override { return "probe"; }
    uint16_t m_sizes[1] { 16 };
};

class VirtioDeviceBaseTest : public ::testing::Test {
protected:
    ActivationContext make_context() {
        ActivationContext context;
        context.features = feature_bit(FEATURE_RING_EVENT_IDX);
        context.queues.emplace_back(*Queue::create(memory, driver.config(), context.features));
        context.memory = &memory;
        context.interrupt = &interrupt;
        context.fail = [this](Error const& error) {
            failures.push_back(error.message());
            device_active_when_told.push_back(device.active());
        };
        context.reschedule = [this](size_t queue) { rescheduled.push_back(queue); };
        return context;
    }

    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 1 << 20 } });
    DriverQueue driver { memory, GuestAddress(0x1000), 16 };
    RecordingInterruptLine line;
    VirtioInterrupt interrupt { line };
    ProbeDevice device;
    std::vector<std::string> failures;
    std::vector<bool> device_active_when_told;
    std::vector<size_t> rescheduled;
};

TEST_F(VirtioDeviceBaseTest, FailDropsTheContextCleansUpAndThenTellsTheTransportOnce) {
    ASSERT_TRUE(device.activate(make_context()));
    ASSERT_TRUE(device.active());
    device.fail(Error("ring broken"));
    EXPECT_FALSE(device.active());
    EXPECT_EQ(device.failed_while_active, std::vector<bool> { false }) << "on_failed runs after the context is gone";
    EXPECT_EQ(failures, std::vector<std::string> { "ring broken" });
    EXPECT_EQ(device_active_when_told, std::vector<bool> { false }) << "the transport hears of it last";
    device.fail(Error("again"));
    EXPECT_EQ(failures.size(), 1u) << "an inactive device has nobody to tell";
    EXPECT_EQ(device.failed_while_active.size(), 1u);
}

TEST_F(VirtioDeviceBaseTest, FailOnErrorFailsOnlyOnAnError) {
    ASSERT_TRUE(device.activate(make_context()));
    device.fail_on_error({});
    EXPECT_TRUE(device.active());
    device.fail_on_error(Error("bad chain"));
    EXPECT_FALSE(device.active());
    EXPECT_EQ(failures, std::vector<std::string> { "bad chain" });
}

TEST_F(VirtioDeviceBaseTest, YieldTurnCountsAndAsksForTheSameQueue) {
    ASSERT_TRUE(device.activate(make_context()));
    EXPECT_EQ(device.budget_yields(), 0u);
    device.yield_turn(0);
    device.yield_turn(0);
    EXPECT_EQ(device.budget_yields(), 2u);
    EXPECT_EQ(rescheduled, (std::vector<size_t> { 0, 0 }));
}

TEST_F(VirtioDeviceBaseTest, InterruptIfWantedFollowsTheDriversUsedEvent) {
    ASSERT_TRUE(device.activate(make_context()));
    auto& queue = *device.context().queues[0];
    DescriptorChain chain;
    auto complete_one = [&] {
        driver.add_chain({ driver.writable_buffer(8) });
        ASSERT_TRUE(*queue.pop(chain));
        ASSERT_TRUE(queue.add_used(chain.head(), 0));
    };
    complete_one();
    ASSERT_TRUE(device.interrupt_if_wanted(queue));
    EXPECT_EQ(line.levels.size(), 2u) << "the first used buffer interrupts (one pulse)";
    EXPECT_EQ(interrupt.status() & INTERRUPT_USED_BUFFER, INTERRUPT_USED_BUFFER);
    driver.set_used_event(5); // the driver wants to hear only after the sixth
    complete_one();
    ASSERT_TRUE(device.interrupt_if_wanted(queue));
    EXPECT_EQ(line.levels.size(), 2u) << "suppressed by used_event";
}

TEST_F(VirtioDeviceBaseTest, ResetAndReactivationServeTheNewContext) {
    ASSERT_TRUE(device.activate(make_context()));
    device.reset();
    EXPECT_FALSE(device.active());
    ASSERT_TRUE(device.activate(make_context()));
    EXPECT_TRUE(device.active());
    device.guest_error("a driver mistake is logged, rate-limited, and changes nothing");
    EXPECT_TRUE(device.active());
}

} // namespace
} // namespace kvmm::virtio

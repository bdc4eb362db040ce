// BalloonState: save -> encode -> decode -> restore into a fresh device, the restored device
// serving the next chains (inflate, the held stats buffer on the timer), and the refusals.
#include "devices/virtio/balloon/balloon_device.h"

#include "base/testing/state_round_trip.h"

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "devices/virtio/testing/state_expectations.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace kvmm::virtio {
namespace {

using testing::DriverQueue;
using testing::MmioDriver;

constexpr uint64_t FEATURES =
    feature_bit(FEATURE_RING_EVENT_IDX) | feature_bit(FEATURE_VERSION_1) | feature_bit(BALLOON_F_STATS_VQ);
constexpr uint64_t CONFIG = MmioTransport::CONFIG_OFFSET;
constexpr uint32_t FREE_PFN = 0x100; // 1 MiB: above every queue's rings and data area

std::vector<std::byte> little_endian(std::vector<std::pair<uint64_t, size_t>> const& fields) {
    std::vector<std::byte> bytes;
    for (auto const& [value, width] : fields)
        for (size_t i = 0; i < width; ++i)
            bytes.push_back(static_cast<std::byte>(value >> (8 * i)));
    return bytes;
}

class BalloonStateTest : public ::testing::Test {
protected:
    void bring_up() {
        auto device = MUST(BalloonDevice::create(loop, options));
        balloon = device.get();
        transport = MUST(MmioTransport::create("balloon", std::move(device), memory, line, loop));
        driver.emplace(*transport, loop);
        ASSERT_EQ(driver->initialize(FEATURES, { &queues[0], &queues[1], &queues[2] }) & STATUS_DRIVER_OK,
                  STATUS_DRIVER_OK);
    }

    ActivationContext context(uint64_t features = FEATURES, size_t queue_count = 3) {
        ActivationContext result;
        result.features = features;
        for (size_t i = 0; i < 4; ++i) {
            if (i < queue_count)
                result.queues.emplace_back(MUST(Queue::create(memory, queues[i].config(), features)));
            else
                result.queues.emplace_back(std::nullopt);
        }
        result.memory = &memory;
        result.interrupt = &interrupt;
        result.fail = [this](Error const& error) { failures.push_back(error.message()); };
        result.reschedule = [this](size_t index) { rescheduled.push_back(index); };
        return result;
    }

    std::optional<UsedElement> wait_used(DriverQueue& queue) {
        auto const until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (std::chrono::steady_clock::now() < until) {
            if (auto used = queue.pop_used())
                return used;
            (void)loop.run_once(std::chrono::milliseconds(10));
        }
        return std::nullopt;
    }

    BalloonOptions options { .target_mib = 2 };
    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 4 << 20 } });
    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    RecordingInterruptLine restored_line;
    VirtioInterrupt interrupt { restored_line };
    BalloonDevice* balloon { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
    DriverQueue queues[4] { { memory, GuestAddress(0x10000), 256 },
                            { memory, GuestAddress(0x20000), 256 },
                            { memory, GuestAddress(0x30000), 256 },
                            { memory, GuestAddress(0x40000), 256 } };
    std::vector<std::string> failures;
    std::vector<size_t> rescheduled;
};

TEST_F(BalloonStateTest, SaveRestoreSave_GivesTheSameState_AndTheRestoredDeviceCarriesOn) {
    bring_up();
    // Inflate two pages, report statistics (held by the device), take a new target and an
    // `actual` from the driver, and a polling interval set at run time.
    queues[0].add_chain({ queues[0].buffer(little_endian({ { FREE_PFN, 4 }, { FREE_PFN + 1, 4 } })) });
    driver->notify(0);
    uint16_t const stats_head =
        queues[2].add_chain({ queues[2].buffer(little_endian({ { 4, 2 }, { 1234, 8 }, { 5, 2 }, { 4096, 8 } })) });
    driver->notify(2);
    driver->run_event_loop();
    ASSERT_TRUE(queues[0].pop_used());
    MUST(balloon->set_target_mib(3));
    driver->write32(CONFIG + BalloonDevice::CONFIG_ACTUAL, 512);
    MUST(balloon->set_stats_interval(std::chrono::hours(1)));
    driver->run_event_loop();

    auto const saved = balloon->save();
    EXPECT_EQ(saved.target_pages, 3 * BalloonDevice::PAGES_PER_MIB);
    EXPECT_EQ(saved.actual_pages, 512u);
    EXPECT_EQ(saved.stats_interval_ms, 3600u * 1000);
    EXPECT_EQ(saved.statistics.get(StatTag::MemoryFree), 1234u);
    EXPECT_EQ(saved.held_stats_head, stats_head);
    ASSERT_TRUE(saved.active);
    ASSERT_TRUE(saved.active->queues[2]);
    EXPECT_EQ(saved.active->queues[2]->in_flight_heads, std::vector<uint16_t> { stats_head });
    EXPECT_FALSE(saved.active->queues[3]);

    StateWriter writer;
    MUST(balloon->save_state(writer));
    auto const blob = seal_state(writer.payload());
    transport.reset();

    auto restored = MUST(BalloonDevice::create(loop, options));
    StateReader reader(MUST(open_state(blob)));
    MUST(restored->restore_state(reader, context()));
    EXPECT_TRUE(reader.at_end());
    EXPECT_EQ(restored->save(), saved);
    EXPECT_EQ(restored->target_mib(), 3u);
    EXPECT_EQ(restored->actual_pages(), 512u);
    EXPECT_EQ(restored->stats_interval(), std::chrono::hours(1));
    EXPECT_EQ(restored->statistics().get(StatTag::MemoryTotal), 4096u);
    EXPECT_EQ(rescheduled, (std::vector<size_t> { 0, 1, 2 }));
    uint8_t num_pages[4];
    restored->read_config(BalloonDevice::CONFIG_NUM_PAGES, num_pages);
    EXPECT_EQ(num_pages[0] | num_pages[1] << 8, 3 * 256);

    // The next inflate chain is served.
    std::vector<std::byte> const filled(BALLOON_PAGE_SIZE, std::byte { 0x5a });
    MUST(memory.write(GuestAddress(uint64_t { FREE_PFN + 2 } << BALLOON_PFN_SHIFT), filled));
    uint16_t const inflate_head = queues[0].add_chain({ queues[0].buffer(little_endian({ { FREE_PFN + 2, 4 } })) });
    restored->process_queue(0);
    auto const inflated = queues[0].pop_used();
    ASSERT_TRUE(inflated);
    EXPECT_EQ(inflated->id, inflate_head);
    EXPECT_EQ(restored->inflated_pages(), 1u);
    auto const page = MUST(memory.read_obj<uint8_t>(GuestAddress(uint64_t { FREE_PFN + 2 } << BALLOON_PFN_SHIFT)));
    EXPECT_EQ(page, 0u) << "the inflated page was released";

    // The held stats buffer goes back to the driver when the (shortened) interval expires.
    MUST(restored->set_stats_interval(std::chrono::milliseconds(10)));
    auto const returned = wait_used(queues[2]);
    ASSERT_TRUE(returned) << "the restored device never returned the held stats buffer";
    EXPECT_EQ(returned->id, stats_head);
    EXPECT_TRUE(failures.empty());
}

TEST_F(BalloonStateTest, DeviceNotActivated_KeepsTargetActualAndInterval) {
    options.stats_interval = std::chrono::seconds(5);
    auto device = MUST(BalloonDevice::create(loop, options));
    MUST(device->set_target_mib(7));
    auto const saved = device->save();
    EXPECT_FALSE(saved.active);
    auto const payload = kvmm::testing::encode_payload(saved);
    device.reset();
    options.stats_interval = std::chrono::seconds(0);
    auto restored = MUST(BalloonDevice::create(loop, options));
    StateReader reader(payload);
    MUST(restored->restore_state(reader, std::nullopt));
    EXPECT_EQ(restored->save(), saved);
    EXPECT_EQ(restored->target_mib(), 7u);
    EXPECT_EQ(restored->stats_interval(), std::chrono::seconds(5));
}

TEST_F(BalloonStateTest, BadStates_AreRefusedNamingTheField_AndChangeNothing) {
    bring_up();
    uint16_t const stats_head = queues[2].add_chain({ queues[2].buffer(little_endian({ { 4, 2 }, { 1, 8 } })) });
    driver->notify(2);
    driver->run_event_loop();
    auto const saved = balloon->save();
    ASSERT_EQ(saved.held_stats_head, stats_head);
    transport.reset();

    auto device = MUST(BalloonDevice::create(loop, options));
    auto refuse = [&](std::vector<std::byte> const& payload, std::optional<ActivationContext> with,
                      std::string const& expected) {
        testing::expect_restore_refused(
            *device, [](auto& state_of) { return state_of.save(); }, payload, std::move(with), expected);
    };

    BalloonState other_head = saved;
    other_head.held_stats_head = static_cast<uint16_t>(stats_head + 1);
    refuse(kvmm::testing::encode_payload(other_head), context(), "virtio-balloon/held_stats_head");

    BalloonState no_head = saved;
    no_head.held_stats_head.reset();
    refuse(kvmm::testing::encode_payload(no_head), context(), "virtio-balloon/queue2.in_flight_heads");

    BalloonState held_inflate = saved;
    held_inflate.active->queues[0]->in_flight_heads = { 0 };
    held_inflate.active->queues[0]->next_available = 1;
    refuse(kvmm::testing::encode_payload(held_inflate), context(), "virtio-balloon/queue0.in_flight_heads");

    BalloonState without_stats = saved;
    without_stats.active->features &= ~feature_bit(BALLOON_F_STATS_VQ);
    without_stats.active->queues[2].reset();
    refuse(kvmm::testing::encode_payload(without_stats), context(without_stats.active->features, 2),
           "virtio-balloon/held_stats_head");

    refuse(kvmm::testing::encode_payload(saved), context(FEATURES, 2), "virtio-balloon/queue2");
    refuse(kvmm::testing::encode_payload(saved), std::nullopt, "virtio-balloon/active");

    BalloonState huge_interval = saved;
    huge_interval.stats_interval_ms = BalloonState::MAX_STATS_INTERVAL_MS + 1;
    refuse(kvmm::testing::encode_payload(huge_interval), context(), "virtio-balloon/stats_interval_ms");

    BalloonState other_configuration = saved;
    other_configuration.offered_features |= feature_bit(BALLOON_F_DEFLATE_ON_OOM);
    refuse(kvmm::testing::encode_payload(other_configuration), context(), "virtio-balloon/offered_features");

    auto wrong_version = kvmm::testing::encode_payload(saved);
    wrong_version[2 + BalloonState::SECTION.size()] = std::byte { 9 };
    refuse(wrong_version, context(), "version 9");

    StateWriter short_table;
    short_table.begin_section(BalloonState::SECTION, BalloonState::VERSION);
    short_table.u64(saved.offered_features);
    short_table.u32(0);
    short_table.u32(0);
    short_table.u32(0);
    short_table.u64(0);
    short_table.u64(3);
    short_table.end_section();
    refuse(short_table.payload(), std::nullopt, "virtio-balloon/statistics: 3 is outside [10, 10]");

    auto truncated = kvmm::testing::encode_payload(saved);
    truncated.resize(truncated.size() / 2);
    refuse(truncated, context(), "virtio-balloon");

    EXPECT_TRUE(rescheduled.empty());
    auto const payload = kvmm::testing::encode_payload(saved);
    StateReader reader(payload);
    MUST(device->restore_state(reader, context()));
    EXPECT_EQ(device->save(), saved);
}

} // namespace
} // namespace kvmm::virtio

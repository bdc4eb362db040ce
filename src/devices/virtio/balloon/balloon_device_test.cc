#include "devices/virtio/balloon/balloon_device.h"

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sys/mman.h>

namespace kvmm::virtio {
namespace {

using testing::DriverBuffer;
using testing::DriverQueue;
using testing::MmioDriver;

constexpr uint64_t INTERRUPT_STATUS = 0x60;
constexpr uint64_t STATUS = 0x70;
constexpr uint64_t CONFIG = 0x100;
constexpr uint64_t CONFIG_GENERATION = 0xfc;
constexpr uint64_t MEMORY_SIZE = 4 << 20;
constexpr uint32_t FIRST_FREE_PFN = 0x100; // 1 MiB: above every queue's rings and data area

std::vector<std::byte> encode_pfns(std::vector<uint32_t> const& pfns) {
    std::vector<std::byte> bytes;
    for (uint32_t const pfn : pfns)
        for (unsigned i = 0; i < 4; ++i)
            bytes.push_back(static_cast<std::byte>(pfn >> (8 * i)));
    return bytes;
}

std::vector<std::byte> encode_stats(std::vector<std::pair<uint16_t, uint64_t>> const& entries) {
    std::vector<std::byte> bytes;
    for (auto const& [tag, value] : entries) {
        for (unsigned i = 0; i < 2; ++i)
            bytes.push_back(static_cast<std::byte>(tag >> (8 * i)));
        for (unsigned i = 0; i < 8; ++i)
            bytes.push_back(static_cast<std::byte>(value >> (8 * i)));
    }
    return bytes;
}

GuestAddress page(uint32_t pfn) { return GuestAddress(uint64_t { pfn } << BALLOON_PFN_SHIFT); }

class BalloonDeviceTest : public ::testing::Test {
protected:
    // Creates the device and runs the driver's initialization with `features` and the queues
    // in `used` (index -> queue; nullptr: not set up). Returns the status register.
    uint32_t create(BalloonOptions const& options, uint64_t features, std::vector<DriverQueue*> const& used) {
        auto device = MUST(BalloonDevice::create(loop, options));
        balloon = device.get();
        transport = MUST(MmioTransport::create("balloon", std::move(device), memory, line, loop));
        driver.emplace(*transport, loop);
        return driver->initialize(features, used);
    }
    void create_default(uint64_t features = feature_bit(FEATURE_RING_EVENT_IDX)) {
        ASSERT_EQ(create({}, features, { &queues[0], &queues[1] }) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    }

    void fill_pages(uint32_t first_pfn, uint32_t count, std::byte value) {
        std::vector<std::byte> const bytes(uint64_t { count } * BALLOON_PAGE_SIZE, value);
        MUST(memory.write(page(first_pfn), bytes));
    }
    bool resident(uint32_t pfn) {
        std::vector<iovec> pieces;
        MUST(memory.host_ranges(page(pfn), BALLOON_PAGE_SIZE, pieces));
        unsigned char state = 0;
        EXPECT_EQ(::mincore(pieces[0].iov_base, BALLOON_PAGE_SIZE, &state), 0);
        return state & 1;
    }
    bool page_is(uint32_t pfn, std::byte value) {
        std::vector<std::byte> bytes(BALLOON_PAGE_SIZE);
        MUST(memory.read(page(pfn), bytes));
        return std::all_of(bytes.begin(), bytes.end(), [value](std::byte b) { return b == value; });
    }
    // Offers one PFN array on `queue` and lets the device process it.
    std::optional<UsedElement> send_pfns(size_t index, std::vector<uint32_t> const& pfns) {
        queues[index].add_chain({ queues[index].buffer(encode_pfns(pfns)) });
        driver->notify(static_cast<uint16_t>(index));
        driver->run_event_loop();
        return queues[index].pop_used();
    }
    // Runs the event loop until `queue` has a used buffer or `deadline` passes.
    std::optional<UsedElement> wait_used(DriverQueue& queue, std::chrono::milliseconds deadline) {
        auto const until = std::chrono::steady_clock::now() + deadline;
        while (std::chrono::steady_clock::now() < until) {
            (void)loop.run_once(std::chrono::milliseconds(10));
            if (auto used = queue.pop_used())
                return used;
        }
        return std::nullopt;
    }

    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), MEMORY_SIZE } });
    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    BalloonDevice* balloon { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
    // Each queue's rings and data area fit in the 64 KiB from its base.
    DriverQueue queues[4] { { memory, GuestAddress(0x10000), 256 },
                            { memory, GuestAddress(0x20000), 256 },
                            { memory, GuestAddress(0x30000), 256 },
                            { memory, GuestAddress(0x40000), 256 } };
};

TEST_F(BalloonDeviceTest, OffersStatsAlwaysAndOtherFeaturesWhenConfigured) {
    create_default();
    uint64_t const base = driver->device_features();
    EXPECT_TRUE(has_feature(base, BALLOON_F_STATS_VQ));
    EXPECT_FALSE(has_feature(base, BALLOON_F_DEFLATE_ON_OOM));
    EXPECT_FALSE(has_feature(base, BALLOON_F_REPORTING));
    EXPECT_FALSE(has_feature(base, BALLOON_F_FREE_PAGE_HINT));
    EXPECT_TRUE(has_feature(base, FEATURE_RING_EVENT_IDX));
    EXPECT_TRUE(has_feature(base, FEATURE_RING_INDIRECT_DESC));

    ASSERT_TRUE(create({ .deflate_on_oom = true, .free_page_reporting = true }, 0, { &queues[0], &queues[1] }) &
                STATUS_DRIVER_OK);
    uint64_t const all = driver->device_features();
    EXPECT_TRUE(has_feature(all, BALLOON_F_DEFLATE_ON_OOM));
    EXPECT_TRUE(has_feature(all, BALLOON_F_REPORTING));
}

TEST_F(BalloonDeviceTest, InflateReleasesExactlyTheGivenPages) {
    create_default();
    fill_pages(FIRST_FREE_PFN, 6, std::byte { 0xab });
    fill_pages(FIRST_FREE_PFN + 0x80, 1, std::byte { 0xcd });
    ASSERT_TRUE(resident(FIRST_FREE_PFN + 1));
    // Out of order and with a gap, as a guest's page allocator hands them out.
    auto const used = send_pfns(0, { FIRST_FREE_PFN + 2, FIRST_FREE_PFN, FIRST_FREE_PFN + 3, FIRST_FREE_PFN + 1,
                                     FIRST_FREE_PFN + 0x80 });
    ASSERT_TRUE(used);
    EXPECT_EQ(used->length, 0u);
    for (uint32_t pfn :
         { FIRST_FREE_PFN, FIRST_FREE_PFN + 1, FIRST_FREE_PFN + 2, FIRST_FREE_PFN + 3, FIRST_FREE_PFN + 0x80 })
        EXPECT_FALSE(resident(pfn)) << pfn;
    EXPECT_TRUE(resident(FIRST_FREE_PFN + 4));
    EXPECT_TRUE(page_is(FIRST_FREE_PFN, std::byte { 0 }));
    EXPECT_TRUE(page_is(FIRST_FREE_PFN + 3, std::byte { 0 }));
    EXPECT_TRUE(page_is(FIRST_FREE_PFN + 0x80, std::byte { 0 }));
    EXPECT_TRUE(page_is(FIRST_FREE_PFN + 4, std::byte { 0xab }));
    EXPECT_EQ(balloon->inflated_pages(), 5u);
    EXPECT_EQ(driver->read32(INTERRUPT_STATUS) & INTERRUPT_USED_BUFFER, INTERRUPT_USED_BUFFER);
}

TEST_F(BalloonDeviceTest, InflatePfnsOutsideRamAreSkipped) {
    create_default();
    fill_pages(FIRST_FREE_PFN, 1, std::byte { 0x11 });
    uint32_t const past_end = MEMORY_SIZE >> BALLOON_PFN_SHIFT;
    auto const used = send_pfns(0, { past_end, 0xffffffff, FIRST_FREE_PFN, past_end - 1 + 0x100000 });
    ASSERT_TRUE(used);
    EXPECT_TRUE(page_is(FIRST_FREE_PFN, std::byte { 0 }));
    EXPECT_EQ(balloon->inflated_pages(), 1u);
    EXPECT_EQ(balloon->rejected_pages(), 3u);
    EXPECT_EQ(driver->read32(STATUS) & STATUS_DEVICE_NEEDS_RESET, 0u);
}

TEST_F(BalloonDeviceTest, TruncatedPfnArrayUsesTheWholeEntriesOnly) {
    create_default();
    fill_pages(FIRST_FREE_PFN, 2, std::byte { 0x22 });
    auto bytes = encode_pfns({ FIRST_FREE_PFN, FIRST_FREE_PFN + 1 });
    bytes.resize(6); // the second PFN is cut in half
    queues[0].add_chain({ queues[0].buffer(bytes) });
    driver->notify(0);
    driver->run_event_loop();
    ASSERT_TRUE(queues[0].pop_used());
    EXPECT_TRUE(page_is(FIRST_FREE_PFN, std::byte { 0 }));
    EXPECT_TRUE(page_is(FIRST_FREE_PFN + 1, std::byte { 0x22 }));
    EXPECT_EQ(balloon->inflated_pages(), 1u);
    EXPECT_EQ(balloon->malformed_buffers(), 1u);
}

TEST_F(BalloonDeviceTest, OversizedPfnArrayIsCapped) {
    create_default();
    uint32_t const past_end = MEMORY_SIZE >> BALLOON_PFN_SHIFT;
    std::vector<uint32_t> const pfns(BalloonDevice::MAX_PFNS_PER_BUFFER + 100, past_end);
    ASSERT_TRUE(send_pfns(0, pfns));
    EXPECT_EQ(balloon->rejected_pages(), BalloonDevice::MAX_PFNS_PER_BUFFER);
    EXPECT_EQ(balloon->malformed_buffers(), 1u);
}

TEST_F(BalloonDeviceTest, PfnArraySplitAcrossIndirectDescriptorsIsReassembled) {
    create_default(feature_bit(FEATURE_RING_INDIRECT_DESC));
    fill_pages(FIRST_FREE_PFN, 2, std::byte { 0x33 });
    auto const bytes = encode_pfns({ FIRST_FREE_PFN, FIRST_FREE_PFN + 1 });
    auto const head = std::span(bytes).first(5);
    auto const tail = std::span(bytes).subspan(5);
    queues[0].add_indirect_chain({ queues[0].buffer(head), queues[0].buffer(tail) });
    driver->notify(0);
    driver->run_event_loop();
    ASSERT_TRUE(queues[0].pop_used());
    EXPECT_TRUE(page_is(FIRST_FREE_PFN + 1, std::byte { 0 }));
    EXPECT_EQ(balloon->inflated_pages(), 2u);
}

TEST_F(BalloonDeviceTest, DeflateKeepsMemoryAndCountsPages) {
    create_default();
    fill_pages(FIRST_FREE_PFN, 1, std::byte { 0x44 });
    auto const used = send_pfns(1, { FIRST_FREE_PFN, FIRST_FREE_PFN + 1, 0xffffffff });
    ASSERT_TRUE(used);
    EXPECT_TRUE(page_is(FIRST_FREE_PFN, std::byte { 0x44 }));
    EXPECT_EQ(balloon->deflated_pages(), 3u);
    EXPECT_EQ(balloon->inflated_pages(), 0u);
}

TEST_F(BalloonDeviceTest, SetTargetUpdatesNumPagesAndRaisesConfigChange) {
    ASSERT_TRUE(create({ .target_mib = 1 }, 0, { &queues[0], &queues[1] }) & STATUS_DRIVER_OK);
    EXPECT_EQ(driver->read32(CONFIG + BalloonDevice::CONFIG_NUM_PAGES), 256u);
    EXPECT_EQ(driver->read32(INTERRUPT_STATUS) & INTERRUPT_CONFIG_CHANGE, 0u);
    uint32_t const generation = driver->read32(CONFIG_GENERATION);

    MUST(balloon->set_target_mib(3));
    driver->run_event_loop();
    EXPECT_EQ(driver->read32(CONFIG + BalloonDevice::CONFIG_NUM_PAGES), 768u);
    EXPECT_EQ(driver->read32(INTERRUPT_STATUS) & INTERRUPT_CONFIG_CHANGE, INTERRUPT_CONFIG_CHANGE);
    EXPECT_NE(driver->read32(CONFIG_GENERATION), generation);
    EXPECT_EQ(balloon->target_mib(), 3u);
}

TEST_F(BalloonDeviceTest, TargetBeyondThe32BitPageCountIsRefused) {
    create_default();
    MUST(balloon->set_target_mib(2));
    EXPECT_FALSE(balloon->set_target_mib(uint64_t { 1 } << 24));
    EXPECT_EQ(balloon->target_mib(), 2u);
}

TEST_F(BalloonDeviceTest, ActualWrittenByTheDriverIsReadBack) {
    create_default();
    driver->write32(CONFIG + BalloonDevice::CONFIG_ACTUAL, 1024);
    EXPECT_EQ(balloon->actual_pages(), 1024u);
    EXPECT_EQ(balloon->actual_mib(), 4u);
    EXPECT_EQ(driver->read32(CONFIG + BalloonDevice::CONFIG_ACTUAL), 1024u);
    // A byte write changes only its own byte.
    uint8_t const high = 0x01;
    transport->write(CONFIG + BalloonDevice::CONFIG_ACTUAL + 1, std::span(&high, 1));
    EXPECT_EQ(balloon->actual_pages(), 0x100u);
    // A wide write from num_pages through actual changes only actual.
    uint8_t const wide[8] { 0xff, 0xff, 0xff, 0xff, 0x34, 0x12, 0, 0 };
    transport->write(CONFIG + BalloonDevice::CONFIG_NUM_PAGES, std::span(wide));
    EXPECT_EQ(balloon->actual_pages(), 0x1234u);
    // num_pages belongs to the host.
    driver->write32(CONFIG + BalloonDevice::CONFIG_NUM_PAGES, 77);
    EXPECT_EQ(driver->read32(CONFIG + BalloonDevice::CONFIG_NUM_PAGES), 0u);
    // Past the configuration space: zeros.
    EXPECT_EQ(driver->read32(CONFIG + BalloonDevice::CONFIG_SIZE), 0u);
}

TEST_F(BalloonDeviceTest, ResetForgetsActual) {
    create_default();
    driver->write32(CONFIG + BalloonDevice::CONFIG_ACTUAL, 512);
    driver->write32(STATUS, 0);
    driver->run_event_loop();
    EXPECT_EQ(balloon->actual_pages(), 0u);
}

TEST_F(BalloonDeviceTest, StatsBufferIsParsedHeldAndReturnedOnTheTimer) {
    ASSERT_TRUE(create({}, feature_bit(BALLOON_F_STATS_VQ), { &queues[0], &queues[1], &queues[2] }) & STATUS_DRIVER_OK);
    queues[2].add_chain({ queues[2].buffer(encode_stats({ { 4, 1000 }, { 5, 2000 }, { 77, 5 } })) });
    driver->notify(2);
    driver->run_event_loop();
    EXPECT_EQ(balloon->statistics().get(StatTag::MemoryFree), 1000u);
    EXPECT_EQ(balloon->statistics().get(StatTag::MemoryTotal), 2000u);
    EXPECT_EQ(balloon->stats_updates(), 1u);
    // Polling is off: the device keeps the buffer.
    EXPECT_FALSE(wait_used(queues[2], std::chrono::milliseconds(50)));

    MUST(balloon->set_stats_interval(std::chrono::milliseconds(20)));
    auto const used = wait_used(queues[2], std::chrono::milliseconds(2000));
    ASSERT_TRUE(used);
    EXPECT_EQ(used->length, 0u);
    EXPECT_EQ(balloon->stats_requests(), 1u);
    EXPECT_EQ(driver->read32(INTERRUPT_STATUS) & INTERRUPT_USED_BUFFER, INTERRUPT_USED_BUFFER);

    // The driver refills and re-posts; later timer ticks without a buffer do nothing.
    MUST(balloon->set_stats_interval(std::chrono::milliseconds(0)));
    queues[2].add_chain({ queues[2].buffer(encode_stats({ { 4, 900 } })) });
    driver->notify(2);
    driver->run_event_loop();
    EXPECT_EQ(balloon->statistics().get(StatTag::MemoryFree), 900u);
    EXPECT_EQ(balloon->statistics().get(StatTag::MemoryTotal), 2000u);
    EXPECT_EQ(balloon->stats_updates(), 2u);
    EXPECT_EQ(balloon->stats_requests(), 1u);
}

TEST_F(BalloonDeviceTest, SecondStatsBufferReturnsTheFirst) {
    ASSERT_TRUE(create({}, feature_bit(BALLOON_F_STATS_VQ), { &queues[0], &queues[1], &queues[2] }) & STATUS_DRIVER_OK);
    uint16_t const first = queues[2].add_chain({ queues[2].buffer(encode_stats({ { 0, 1 } })) });
    driver->notify(2);
    driver->run_event_loop();
    EXPECT_FALSE(queues[2].pop_used());
    queues[2].add_chain({ queues[2].buffer(encode_stats({ { 0, 2 } })) });
    driver->notify(2);
    driver->run_event_loop();
    auto const used = queues[2].pop_used();
    ASSERT_TRUE(used);
    EXPECT_EQ(used->id, first);
    EXPECT_FALSE(queues[2].pop_used());
    EXPECT_EQ(balloon->statistics().get(StatTag::SwapIn), 2u);
}

TEST_F(BalloonDeviceTest, ReportingWithoutStatsUsesQueueTwo) {
    ASSERT_TRUE(create({ .free_page_reporting = true }, feature_bit(BALLOON_F_REPORTING),
                       { &queues[0], &queues[1], &queues[2] }) &
                STATUS_DRIVER_OK);
    fill_pages(FIRST_FREE_PFN, 17, std::byte { 0x55 });
    DriverBuffer const range { page(FIRST_FREE_PFN), 16 * BALLOON_PAGE_SIZE, true };
    DriverBuffer const misaligned { page(FIRST_FREE_PFN + 16).offset(0x800), 0x800, true };
    queues[2].add_chain({ range, misaligned });
    driver->notify(2);
    driver->run_event_loop();
    auto const used = queues[2].pop_used();
    ASSERT_TRUE(used);
    EXPECT_EQ(used->length, 0u);
    EXPECT_FALSE(resident(FIRST_FREE_PFN));
    EXPECT_FALSE(resident(FIRST_FREE_PFN + 15));
    EXPECT_TRUE(page_is(FIRST_FREE_PFN + 15, std::byte { 0 }));
    EXPECT_TRUE(page_is(FIRST_FREE_PFN + 16, std::byte { 0x55 }));
    EXPECT_EQ(balloon->reported_bytes(), 16 * BALLOON_PAGE_SIZE);
    EXPECT_EQ(balloon->rejected_pages(), 1u);
    EXPECT_EQ(balloon->stats_updates(), 0u);
}

TEST_F(BalloonDeviceTest, ReportingWithStatsUsesQueueThree) {
    ASSERT_TRUE(create({ .free_page_reporting = true },
                       feature_bit(BALLOON_F_STATS_VQ) | feature_bit(BALLOON_F_REPORTING),
                       { &queues[0], &queues[1], &queues[2], &queues[3] }) &
                STATUS_DRIVER_OK);
    fill_pages(FIRST_FREE_PFN, 1, std::byte { 0x66 });
    queues[3].add_chain({ DriverBuffer { page(FIRST_FREE_PFN), BALLOON_PAGE_SIZE, true } });
    queues[2].add_chain({ queues[2].buffer(encode_stats({ { 6, 3 } })) });
    driver->notify(3);
    driver->notify(2);
    driver->run_event_loop();
    EXPECT_TRUE(queues[3].pop_used());
    EXPECT_TRUE(page_is(FIRST_FREE_PFN, std::byte { 0 }));
    EXPECT_EQ(balloon->reported_bytes(), BALLOON_PAGE_SIZE);
    EXPECT_FALSE(queues[2].pop_used()); // held for the next poll
    EXPECT_EQ(balloon->statistics().get(StatTag::MemoryAvailable), 3u);
}

TEST_F(BalloonDeviceTest, QueueTwoWithoutNegotiatedFeaturesIsIgnored) {
    ASSERT_TRUE(create({ .free_page_reporting = true }, 0, { &queues[0], &queues[1], &queues[2] }) & STATUS_DRIVER_OK);
    fill_pages(FIRST_FREE_PFN, 1, std::byte { 0x77 });
    queues[2].add_chain({ DriverBuffer { page(FIRST_FREE_PFN), BALLOON_PAGE_SIZE, true } });
    driver->notify(2);
    driver->run_event_loop();
    EXPECT_FALSE(queues[2].pop_used());
    EXPECT_TRUE(page_is(FIRST_FREE_PFN, std::byte { 0x77 }));
    EXPECT_EQ(driver->read32(STATUS) & STATUS_DEVICE_NEEDS_RESET, 0u);
}

TEST_F(BalloonDeviceTest, MissingDeflateQueueNeedsReset) {
    uint32_t const status = create({}, 0, { &queues[0] });
    EXPECT_EQ(status & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
}

TEST_F(BalloonDeviceTest, MalformedRingNeedsReset) {
    create_default();
    queues[0].write_descriptor(0, Descriptor { page(FIRST_FREE_PFN).value(), 4, DESCRIPTOR_F_NEXT, 999 });
    queues[0].offer(0);
    driver->notify(0);
    driver->run_event_loop();
    EXPECT_EQ(driver->read32(STATUS) & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
    EXPECT_FALSE(queues[0].pop_used());
}

} // namespace
} // namespace kvmm::virtio

// libFuzzer target: a hostile virtio-balloon driver. The input chooses the negotiated features,
// writes to the configuration space, and lays out all four queues (raw descriptors, available
// ring entries and the bytes of the buffers they point at: PFN arrays, statistics, reported
// ranges); the device is activated through the MMIO transport and every queue is notified.
// The device must answer each request or ask for a reset: no crash, no unbounded work.
#include "devices/virtio/balloon/balloon_device.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "fuzz_support.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

namespace {

using kvmm::GuestAddress;
using kvmm::fuzz::DataArea;
using kvmm::fuzz::FuzzInput;
using kvmm::virtio::feature_bit;

constexpr uint64_t MEMORY_SIZE = 2 << 20;
constexpr uint16_t QUEUE_SIZE = 16;
constexpr uint64_t QUEUE_BASE = 0x10000;
constexpr uint64_t QUEUE_STRIDE = 0x10000;
constexpr uint64_t DATA_BASE = 0x100000;
constexpr uint64_t DATA_SIZE = 0x10000;

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    using namespace kvmm::virtio;
    FuzzInput input(std::span(data, size));
    kvmm::fuzz::FuzzBench bench(MEMORY_SIZE);
    auto& memory = bench.memory;
    auto& loop = bench.loop;

    uint64_t const selector = input.take(2);
    BalloonOptions options;
    options.free_page_reporting = selector & 1;
    options.deflate_on_oom = selector & 2;
    options.target_mib = input.take(1);
    auto created = BalloonDevice::create(loop, options);
    if (!created)
        return 0;
    auto* balloon = created->get();
    auto transport = *bench.attach("balloon", std::move(*created));
    testing::MmioDriver driver(*transport, loop);

    std::vector<testing::DriverQueue> queues;
    std::vector<testing::DriverQueue*> used;
    queues.reserve(4); // `used` points into it
    for (uint64_t q = 0; q < 4; ++q) {
        auto& queue = queues.emplace_back(memory, GuestAddress(QUEUE_BASE + q * QUEUE_STRIDE), QUEUE_SIZE);
        kvmm::fuzz::lay_out_descriptors(input, queue, DataArea { DATA_BASE, DATA_SIZE });
        if (selector & (0x10 << q))
            queue.set_available_index(static_cast<uint16_t>(input.take(2)));
        used.push_back((selector & 0x4) && q >= 2 ? nullptr : &queue);
    }
    size_t const config_writes = input.take(1) % 8;
    struct ConfigWrite {
        uint64_t offset;
        size_t width;
        uint32_t value;
    };
    std::vector<ConfigWrite> writes;
    for (size_t i = 0; i < config_writes; ++i)
        writes.push_back(
            { input.take(1) % 32, size_t { 1 } << (input.take(1) % 3), static_cast<uint32_t>(input.take(4)) });

    kvmm::fuzz::fill_data_area(input, memory, DataArea { DATA_BASE, DATA_SIZE });

    uint64_t const features = (selector & 0x08 ? feature_bit(BALLOON_F_STATS_VQ) : 0) |
                              (selector & 0x01 ? feature_bit(BALLOON_F_REPORTING) : 0) |
                              (selector & 0x02 ? feature_bit(BALLOON_F_DEFLATE_ON_OOM) : 0) |
                              feature_bit(FEATURE_RING_EVENT_IDX) | feature_bit(FEATURE_RING_INDIRECT_DESC);
    driver.initialize(features, used);
    for (auto const& write : writes) {
        uint8_t bytes[4];
        for (size_t i = 0; i < 4; ++i)
            bytes[i] = static_cast<uint8_t>(write.value >> (8 * i));
        transport->write(MmioTransport::CONFIG_OFFSET + write.offset, std::span<uint8_t const>(bytes, write.width));
    }
    for (uint16_t q = 0; q < 4; ++q)
        driver.notify(q);
    driver.run_event_loop();
    (void)balloon->set_target_mib(options.target_mib + 1);
    if (selector & 0x100) {
        // Exercise the statistics poll: one timer tick returns a held stats buffer.
        // The timer is periodic, so the loop is never idle while it runs: one bounded wait, then off.
        (void)balloon->set_stats_interval(std::chrono::milliseconds(1));
        (void)loop.run_once(std::chrono::milliseconds(5));
        (void)balloon->set_stats_interval(std::chrono::milliseconds(0));
    }
    driver.run_event_loop();
    (void)balloon->statistics();
    return 0;
}

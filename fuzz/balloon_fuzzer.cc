// libFuzzer target: a hostile virtio-balloon driver. The input chooses the negotiated features,
// writes to the configuration space, and lays out all four queues (raw descriptors, available
// ring entries and the bytes of the buffers they point at: PFN arrays, statistics, reported
// ranges); the device is activated through the MMIO transport and every queue is notified.
// The device must answer each request or ask for a reset: no crash, no unbounded work.
#include "devices/virtio/balloon/balloon_device.h"
#include "devices/virtio/testing/mmio_driver.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

namespace {

using kvmm::GuestAddress;
using kvmm::virtio::feature_bit;

class NullInterruptLine final : public kvmm::InterruptLine {
public:
    void set_level(bool) override {}
};

// Reads little-endian values from the input; zeros once it runs out.
class FuzzInput {
public:
    explicit FuzzInput(std::span<uint8_t const> data) : m_data(data) {}

    uint64_t take(size_t bytes) {
        uint64_t value = 0;
        for (size_t i = 0; i < bytes && m_offset < m_data.size(); ++i)
            value |= uint64_t { m_data[m_offset++] } << (8 * i);
        return value;
    }
    std::span<uint8_t const> rest() const { return m_data.subspan(std::min(m_offset, m_data.size())); }

private:
    std::span<uint8_t const> m_data;
    size_t m_offset { 0 };
};

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
    auto memory = *kvmm::GuestMemory::create({ { GuestAddress(0), MEMORY_SIZE } });
    auto loop = *kvmm::EventLoop::create();
    NullInterruptLine line;

    uint64_t const selector = input.take(2);
    BalloonOptions options;
    options.free_page_reporting = selector & 1;
    options.deflate_on_oom = selector & 2;
    options.target_mib = input.take(1);
    auto created = BalloonDevice::create(loop, options);
    if (!created)
        return 0;
    auto* balloon = created->get();
    auto transport = *MmioTransport::create("balloon", std::move(*created), memory, line, loop);
    testing::MmioDriver driver(*transport, loop);

    std::vector<testing::DriverQueue> queues;
    std::vector<testing::DriverQueue*> used;
    queues.reserve(4); // `used` points into it
    for (uint64_t q = 0; q < 4; ++q) {
        auto& queue = queues.emplace_back(memory, GuestAddress(QUEUE_BASE + q * QUEUE_STRIDE), QUEUE_SIZE);
        size_t const descriptors = input.take(1) % (QUEUE_SIZE + 1);
        for (uint16_t i = 0; i < descriptors; ++i) {
            uint64_t const mode = input.take(1);
            uint64_t address = input.take(4);
            // Mostly inside the data area (so the buffers hold fuzz bytes), sometimes anywhere.
            if (!(mode & 0x80))
                address = DATA_BASE + address % DATA_SIZE;
            else
                address |= input.take(4) << 32;
            auto const length = static_cast<uint32_t>((mode & 0x40) ? input.take(4) : input.take(2));
            auto const flags = static_cast<uint16_t>(mode & 0x7);
            auto const next = static_cast<uint16_t>(input.take(1));
            queue.write_descriptor(i, Descriptor { address, length, flags, next });
        }
        size_t const offered = input.take(1) % (QUEUE_SIZE + 1);
        for (size_t i = 0; i < offered; ++i)
            queue.offer(static_cast<uint16_t>(input.take(1)));
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

    auto const contents = input.rest();
    (void)memory.write(GuestAddress(DATA_BASE),
                       std::as_bytes(contents.first(std::min<size_t>(contents.size(), DATA_SIZE))));

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

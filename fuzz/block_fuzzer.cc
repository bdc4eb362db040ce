// libFuzzer target: a hostile virtio-blk driver. The input chooses the negotiated features and
// whether the disk is read-only or write-through, then lays out the request queue (raw
// descriptors, available ring entries and the bytes of the buffers they point at: request
// headers, discard/write-zeroes segments, data); the device is activated through the MMIO
// transport and notified. Every request must be answered (or the device must ask for a reset):
// no crash, no hang, no access outside guest RAM or the image.
//
// With selector bit 7 the chains go straight to the request parser instead (parse_block_request,
// a pure function): the next input byte picks a capacity (from an empty disk to one whose end
// overflows a byte offset) and the limits (the device's, or small ones), and every request the
// parser accepts is checked against them: inside the disk, within the limits, its data inside
// the chain, no write to a read-only disk.
//
// The image is a small memfd reopened through /proc/self/fd, so no file is left behind; the
// synchronous engine keeps each run deterministic.
#include "devices/virtio/block/block_device.h"
#include "devices/virtio/block/block_request.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "fuzz_support.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace {

using kvmm::GuestAddress;
using kvmm::fuzz::DataArea;
using kvmm::fuzz::FuzzInput;
using kvmm::virtio::feature_bit;

constexpr uint64_t MEMORY_SIZE = 2 << 20;
constexpr uint16_t QUEUE_SIZE = 16;
constexpr uint64_t QUEUE_BASE = 0x10000;
constexpr uint64_t DATA_BASE = 0x100000;
constexpr uint64_t DATA_SIZE = 0x10000;
constexpr off_t IMAGE_SIZE = 64 * 1024;

// The path of a memfd that backs the disk, made once per process.
std::string const& image_path() {
    static std::string const path = [] {
        int const fd = ::memfd_create("kvmm-block-fuzz", MFD_CLOEXEC);
        if (fd < 0 || ::ftruncate(fd, IMAGE_SIZE) != 0)
            __builtin_trap();
        return "/proc/self/fd/" + std::to_string(fd);
    }();
    return path;
}

uint64_t segments_length(std::span<kvmm::virtio::ChainSegment const> segments) {
    uint64_t total = 0;
    for (auto const& segment : segments)
        total += segment.length;
    return total;
}

// What an accepted request promises the device; a broken promise is a parser bug.
void check_accepted(kvmm::virtio::BlockRequest const& request, uint64_t capacity, bool read_only,
                    kvmm::virtio::BlockRequestLimits const& limits) {
    using namespace kvmm::virtio;
    auto const inside_disk = [&] {
        return request.sector <= capacity && request.length / BLOCK_SECTOR_SIZE <= capacity - request.sector;
    };
    bool ok = request.length % BLOCK_SECTOR_SIZE == 0 || request.type == BLOCK_REQUEST_GET_ID;
    switch (request.type) {
    case BLOCK_REQUEST_IN:
    case BLOCK_REQUEST_OUT:
        ok = ok && inside_disk() && request.length <= limits.max_request_bytes &&
             request.data_offset <= segments_length(request.data_segments) &&
             request.length <= segments_length(request.data_segments) - request.data_offset &&
             !(read_only && request.type == BLOCK_REQUEST_OUT);
        break;
    case BLOCK_REQUEST_DISCARD:
    case BLOCK_REQUEST_WRITE_ZEROES: {
        uint64_t const limit =
            request.type == BLOCK_REQUEST_DISCARD ? limits.max_discard_sectors : limits.max_write_zeroes_sectors;
        ok = ok && inside_disk() && !read_only && request.length / BLOCK_SECTOR_SIZE <= limit &&
             !(request.may_unmap && request.type == BLOCK_REQUEST_DISCARD);
        break;
    }
    case BLOCK_REQUEST_FLUSH:
        ok = ok && request.length == 0;
        break;
    case BLOCK_REQUEST_GET_ID:
        ok = request.length <= BLOCK_ID_BYTES;
        break;
    default:
        ok = false; // an unknown type must be refused
    }
    if (!ok)
        __builtin_trap();
}

struct ParserParameters {
    uint64_t capacity;
    kvmm::virtio::BlockRequestLimits limits;
};

ParserParameters parser_parameters(uint64_t choice) {
    using kvmm::virtio::BlockDevice;
    constexpr uint64_t CAPACITIES[] = { 0, 1, 8, 128, 2048, uint64_t { 1 } << 32, UINT64_MAX / 512, UINT64_MAX };
    kvmm::virtio::BlockRequestLimits const device { BlockDevice::MAX_REQUEST_BYTES, BlockDevice::MAX_DISCARD_SECTORS,
                                                    BlockDevice::MAX_WRITE_ZEROES_SECTORS };
    kvmm::virtio::BlockRequestLimits const small { 1024, 8, 8 };
    return { CAPACITIES[choice % 8], (choice & 8) ? small : device };
}

void parse_directly(kvmm::GuestMemory const& memory, kvmm::virtio::testing::DriverQueue const& driver,
                    uint64_t features, bool read_only, ParserParameters const& parameters) {
    using namespace kvmm::virtio;
    auto queue = Queue::create(memory, driver.config(), features);
    if (!queue)
        return;
    DescriptorChain chain;
    for (int round = 0; round < 2 * QUEUE_SIZE; ++round) {
        auto const popped = queue->pop(chain);
        if (!popped || !*popped)
            return;
        auto const parsed = parse_block_request(memory, chain, parameters.capacity, read_only, parameters.limits);
        if (parsed) {
            if (auto const* request = std::get_if<BlockRequest>(&*parsed))
                check_accepted(*request, parameters.capacity, read_only, parameters.limits);
        }
        if (!queue->add_used(chain.head(), 0))
            return;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    using namespace kvmm::virtio;
    FuzzInput input(std::span(data, size));
    kvmm::fuzz::FuzzBench bench(MEMORY_SIZE);
    auto& memory = bench.memory;
    auto& loop = bench.loop;

    uint64_t const selector = input.take(1);
    bool const parse_only = (selector & 0x80) != 0;
    auto const parameters = parse_only ? parser_parameters(input.take(1)) : ParserParameters {};
    testing::DriverQueue queue(memory, GuestAddress(QUEUE_BASE), QUEUE_SIZE);
    kvmm::fuzz::lay_out_descriptors(input, queue, DataArea { DATA_BASE, DATA_SIZE });
    if (selector & 4)
        queue.set_available_index(static_cast<uint16_t>(input.take(2)));

    kvmm::fuzz::fill_data_area(input, memory, DataArea { DATA_BASE, DATA_SIZE });

    uint64_t const features = (selector & 0x08 ? feature_bit(FEATURE_RING_EVENT_IDX) : 0) |
                              (selector & 0x10 ? feature_bit(FEATURE_RING_INDIRECT_DESC) : 0) |
                              (selector & 0x20 ? feature_bit(BLOCK_FEATURE_DISCARD) : 0) |
                              (selector & 0x40 ? feature_bit(BLOCK_FEATURE_WRITE_ZEROES) : 0) |
                              feature_bit(BLOCK_FEATURE_FLUSH);
    if (parse_only) {
        parse_directly(memory, queue, features, (selector & 1) != 0, parameters);
        return 0;
    }

    auto image = kvmm::DiskImage::open(image_path(), (selector & 1) != 0);
    if (!image)
        return 0;
    BlockOptions options;
    options.engine = kvmm::DiskEngineKind::Sync;
    options.write_through = (selector & 2) != 0;
    auto created = BlockDevice::create(std::move(*image), loop, std::move(options));
    if (!created)
        return 0;
    auto transport = *bench.attach("blk", std::move(*created));
    testing::MmioDriver driver(*transport, loop);
    driver.initialize(features & driver.device_features(), { &queue });
    driver.notify(0);
    driver.run_event_loop();
    // Completions of the synchronous engine arrive through its eventfd; one more round reaps them.
    driver.run_event_loop(1);
    return 0;
}

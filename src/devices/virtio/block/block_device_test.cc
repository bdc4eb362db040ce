#include "devices/virtio/block/block_device.h"

#include "backends/disk/crash_states.h"
#include "backends/disk/qcow2_image.h"
#include "backends/disk/write_log_format.h"
#include "base/file.h"
#include "base/testing/manual_clock.h"
#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>

namespace kvmm::virtio {
namespace {

using testing::DriverBuffer;
using testing::DriverQueue;
using testing::MmioDriver;

constexpr uint64_t DISK_SIZE = 1 << 20;
constexpr uint64_t SECTOR = BlockDevice::SECTOR_SIZE;
constexpr uint64_t CONFIG = MmioTransport::CONFIG_OFFSET;

// A real temporary image file, removed at the end of the test.
class TempImage {
public:
    explicit TempImage(uint64_t size) {
        char name[] = "/tmp/kvmm-block-test-XXXXXX";
        int const fd = ::mkstemp(name);
        if (fd < 0)
            throw std::runtime_error("mkstemp failed");
        m_path = name;
        // A recognisable pattern: byte i of the image is (i * 7 + i / 4096) & 0xff.
        std::vector<uint8_t> contents(size);
        for (uint64_t i = 0; i < size; ++i)
            contents[i] = static_cast<uint8_t>(i * 7 + i / 4096);
        if (::pwrite(fd, contents.data(), size, 0) != static_cast<ssize_t>(size))
            throw std::runtime_error("pwrite failed");
        ::close(fd);
    }
    ~TempImage() { ::unlink(m_path.c_str()); }

    std::string const& path() const { return m_path; }
    std::vector<uint8_t> read(uint64_t offset, uint64_t length) const {
        std::vector<uint8_t> bytes(length);
        int const fd = ::open(m_path.c_str(), O_RDONLY | O_CLOEXEC);
        EXPECT_EQ(::pread(fd, bytes.data(), length, static_cast<off_t>(offset)), static_cast<ssize_t>(length));
        ::close(fd);
        return bytes;
    }
    static uint8_t pattern(uint64_t i) { return static_cast<uint8_t>(i * 7 + i / 4096); }

private:
    std::string m_path;
};

struct Request {
    uint16_t head;
    GuestAddress status;
};

class BlockDeviceTest : public ::testing::Test {
protected:
    void create(BlockOptions options = {}, bool read_only = false,
                uint64_t features = feature_bit(FEATURE_RING_EVENT_IDX)) {
        auto image = MUST(DiskImage::open(qcow2_path.empty() ? image_file.path() : qcow2_path, read_only,
                                          qcow2_path.empty() ? DiskFormat::Raw : DiskFormat::Qcow2));
        auto device = MUST(BlockDevice::create(std::move(image), loop, std::move(options)));
        block = device.get();
        transport = MUST(MmioTransport::create("blk", std::move(device), memory, line, loop));
        driver.emplace(*transport, loop);
        offered = driver->device_features();
        ASSERT_EQ(driver->initialize(features & offered, { queue.get() }) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    }

    DriverBuffer header(uint32_t type, uint64_t sector) {
        BlockRequestHeader const value { type, 0, sector };
        return queue->buffer(std::as_bytes(std::span(&value, 1)));
    }
    DriverBuffer data(std::vector<uint8_t> const& bytes) { return queue->buffer(std::as_bytes(std::span(bytes))); }

    // header, data buffers, one status byte.
    Request request(uint32_t type, uint64_t sector, std::vector<DriverBuffer> buffers = {}) {
        buffers.insert(buffers.begin(), header(type, sector));
        auto const status = queue->writable_buffer(1);
        MUST(memory.write_obj(status.address, uint8_t { 0xff }));
        buffers.push_back(status);
        return Request { queue->add_chain(buffers), status.address };
    }

    // Notifies and runs the loop until `count` used elements are back (or `timeout` passes).
    std::vector<UsedElement> complete(size_t count, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
        driver->notify(0);
        std::vector<UsedElement> used;
        auto const deadline = std::chrono::steady_clock::now() + timeout;
        while (used.size() < count && std::chrono::steady_clock::now() < deadline) {
            (void)loop.run_once(std::chrono::milliseconds(10));
            while (auto element = queue->pop_used())
                used.push_back(*element);
        }
        return used;
    }
    uint8_t status(Request const& r) { return MUST(memory.read_obj<uint8_t>(r.status)); }
    std::vector<uint8_t> guest_bytes(GuestAddress address, uint32_t length) {
        auto const bytes = queue->read(address, length);
        std::vector<uint8_t> out(length);
        std::memcpy(out.data(), bytes.data(), length);
        return out;
    }
    uint32_t config32(uint64_t offset) { return driver->read32(CONFIG + offset); }

    TempImage image_file { DISK_SIZE };
    std::string qcow2_path; // when set, the device serves this qcow2 image instead
    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 16 << 20 } });
    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    BlockDevice* block { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
    std::unique_ptr<DriverQueue> queue =
        std::make_unique<DriverQueue>(memory, GuestAddress(0x10000), BlockDevice::QUEUE_SIZE);
    uint64_t offered { 0 };
};

std::vector<uint8_t> filled(size_t length, uint8_t seed) {
    std::vector<uint8_t> bytes(length);
    for (size_t i = 0; i < length; ++i)
        bytes[i] = static_cast<uint8_t>(seed + i * 13);
    return bytes;
}

class BlockDeviceEngineTest : public BlockDeviceTest, public ::testing::WithParamInterface<DiskEngineKind> {
protected:
    void create_with_engine() {
        BlockOptions options;
        options.engine = GetParam();
        create(std::move(options));
        // create_engine() falls back to the synchronous engine where io_uring cannot be set up.
        if (block->engine_kind() != GetParam())
            GTEST_SKIP() << "io_uring is not available here; the synchronous engine was used";
    }
};

TEST_P(BlockDeviceEngineTest, WriteThenRead_RoundTripsThroughTheImage) {
    create_with_engine();
    if (IsSkipped())
        return;
    auto const written = filled(4096, 3);
    auto const write = request(BLOCK_REQUEST_OUT, 16, { data(written) });
    auto used = complete(1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].id, write.head);
    EXPECT_EQ(used[0].length, 1u);
    EXPECT_EQ(status(write), BLOCK_STATUS_OK);
    EXPECT_EQ(image_file.read(16 * SECTOR, 4096), written);

    auto const buffer = queue->writable_buffer(4096);
    auto const read = request(BLOCK_REQUEST_IN, 16, { buffer });
    used = complete(1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 4096u + 1);
    EXPECT_EQ(status(read), BLOCK_STATUS_OK);
    EXPECT_EQ(guest_bytes(buffer.address, 4096), written);
    EXPECT_EQ(block->read_operations(), 1u);
    EXPECT_EQ(block->read_bytes(), 4096u);
    EXPECT_EQ(block->write_operations(), 1u);
    EXPECT_EQ(block->write_bytes(), 4096u);
    EXPECT_EQ(block->errors(), 0u);
    EXPECT_FALSE(line.levels.empty()); // the used buffers were signalled
}

TEST_P(BlockDeviceEngineTest, SixtyFourRequestsInFlight_AllComplete) {
    create_with_engine();
    if (IsSkipped())
        return;
    std::vector<Request> requests;
    std::vector<DriverBuffer> buffers;
    for (uint64_t i = 0; i < 64; ++i) {
        buffers.push_back(queue->writable_buffer(4096));
        requests.push_back(request(BLOCK_REQUEST_IN, i * 8, { buffers.back() }));
    }
    auto const used = complete(64);
    ASSERT_EQ(used.size(), 64u);
    for (uint64_t i = 0; i < 64; ++i) {
        EXPECT_EQ(status(requests[i]), BLOCK_STATUS_OK);
        auto const bytes = guest_bytes(buffers[i].address, 4096);
        EXPECT_EQ(bytes, image_file.read(i * 4096, 4096)) << "request " << i;
    }
    EXPECT_EQ(block->read_operations(), 64u);
}

INSTANTIATE_TEST_SUITE_P(Engines, BlockDeviceEngineTest,
                         ::testing::Values(DiskEngineKind::Sync, DiskEngineKind::IoUring), [](auto const& param_info) {
                             return param_info.param == DiskEngineKind::Sync ? "Sync" : "IoUring";
                         });

TEST_F(BlockDeviceTest, Config_DescribesTheImage) {
    create();
    EXPECT_EQ(config32(0), DISK_SIZE / SECTOR); // capacity, low half
    EXPECT_EQ(config32(4), 0u);
    EXPECT_EQ(config32(12), BlockDevice::SEG_MAX);
    EXPECT_EQ(config32(20), 512u);
    EXPECT_EQ(config32(32) & 0xff, 1u); // writeback
    EXPECT_EQ(config32(36), BlockDevice::MAX_DISCARD_SECTORS);
    EXPECT_EQ(config32(40), 1u);
    EXPECT_EQ(config32(52), 1u);
    EXPECT_EQ(config32(56) & 0xff, 1u);
    EXPECT_TRUE(has_feature(offered, BLOCK_FEATURE_FLUSH));
    EXPECT_TRUE(has_feature(offered, BLOCK_FEATURE_DISCARD));
    EXPECT_TRUE(has_feature(offered, BLOCK_FEATURE_WRITE_ZEROES));
    EXPECT_FALSE(has_feature(offered, BLOCK_FEATURE_RO));
    EXPECT_EQ(driver->read32(0x8), static_cast<uint32_t>(DeviceType::Block));
}

TEST_F(BlockDeviceTest, MultiSegmentRequest_ScattersAcrossBuffers) {
    create();
    auto const first = queue->writable_buffer(512);
    auto const second = queue->writable_buffer(1024);
    auto const third = queue->writable_buffer(512);
    auto const read = request(BLOCK_REQUEST_IN, 3, { first, second, third });
    auto const used = complete(1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 2048u + 1);
    EXPECT_EQ(status(read), BLOCK_STATUS_OK);
    auto const expected = image_file.read(3 * SECTOR, 2048);
    auto combined = guest_bytes(first.address, 512);
    auto const middle = guest_bytes(second.address, 1024);
    auto const last = guest_bytes(third.address, 512);
    combined.insert(combined.end(), middle.begin(), middle.end());
    combined.insert(combined.end(), last.begin(), last.end());
    EXPECT_EQ(combined, expected);
}

TEST_F(BlockDeviceTest, HeaderSplitAcrossDescriptorsAndDataInTheSameOne_IsAccepted) {
    create();
    // 5.2.6 / 2.6.4: framing is the driver's choice; header in two pieces, then data.
    BlockRequestHeader const value { BLOCK_REQUEST_OUT, 0, 2 };
    std::vector<uint8_t> bytes(16 + 512);
    std::memcpy(bytes.data(), &value, 16);
    auto const payload = filled(512, 9);
    std::copy(payload.begin(), payload.end(), bytes.begin() + 16);
    std::vector<uint8_t> const head_part(bytes.begin(), bytes.begin() + 10);
    std::vector<uint8_t> const rest(bytes.begin() + 10, bytes.end());
    auto const status_buffer = queue->writable_buffer(1);
    queue->add_chain({ data(head_part), data(rest), status_buffer });
    ASSERT_EQ(complete(1).size(), 1u);
    EXPECT_EQ(MUST(memory.read_obj<uint8_t>(status_buffer.address)), BLOCK_STATUS_OK);
    EXPECT_EQ(image_file.read(2 * SECTOR, 512), payload);
}

TEST_F(BlockDeviceTest, GetId_ReturnsTheSerialZeroPadded) {
    BlockOptions options;
    options.serial = "disk-serial-1";
    create(std::move(options));
    auto const buffer = queue->writable_buffer(20);
    auto const get_id = request(BLOCK_REQUEST_GET_ID, 0, { buffer });
    auto const used = complete(1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 21u);
    EXPECT_EQ(status(get_id), BLOCK_STATUS_OK);
    auto const bytes = guest_bytes(buffer.address, 20);
    EXPECT_EQ(std::string(reinterpret_cast<char const*>(bytes.data())), "disk-serial-1");
    EXPECT_TRUE(std::all_of(bytes.begin() + 13, bytes.end(), [](uint8_t b) { return b == 0; }));
}

TEST_F(BlockDeviceTest, GetIdWithoutSerial_ReturnsTheImageDeviceId) {
    // Read before the device takes the image's exclusive lock.
    auto const expected = MUST(DiskImage::open(image_file.path(), true)).device_id();
    create();
    auto const buffer = queue->writable_buffer(20);
    request(BLOCK_REQUEST_GET_ID, 0, { buffer });
    ASSERT_EQ(complete(1).size(), 1u);
    auto const bytes = guest_bytes(buffer.address, 20);
    EXPECT_EQ(std::string(reinterpret_cast<char const*>(bytes.data()), expected.size()), expected);
}

TEST_F(BlockDeviceTest, FlushInWriteBack_Completes) {
    create();
    auto const flush = request(BLOCK_REQUEST_FLUSH, 0);
    auto const used = complete(1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 1u);
    EXPECT_EQ(status(flush), BLOCK_STATUS_OK);
    EXPECT_EQ(block->flush_operations(), 1u);
}

TEST_F(BlockDeviceTest, WriteThrough_DoesNotOfferFlushAndClearsWriteback) {
    BlockOptions options;
    options.write_through = true;
    create(std::move(options));
    EXPECT_FALSE(has_feature(offered, BLOCK_FEATURE_FLUSH));
    EXPECT_EQ(config32(32) & 0xff, 0u);
    auto const written = filled(512, 77);
    auto const write = request(BLOCK_REQUEST_OUT, 0, { data(written) });
    ASSERT_EQ(complete(1).size(), 1u);
    EXPECT_EQ(status(write), BLOCK_STATUS_OK);
    EXPECT_EQ(image_file.read(0, 512), written);
}

TEST_F(BlockDeviceTest, DiscardAndWriteZeroes_ReadBackZeros) {
    create();
    BlockRangeSegment const discard { 8, 8, 0 };
    BlockRangeSegment const zeroes { 32, 16, 1 };
    auto const first = request(BLOCK_REQUEST_DISCARD, 0, { queue->buffer(std::as_bytes(std::span(&discard, 1))) });
    auto const second = request(BLOCK_REQUEST_WRITE_ZEROES, 0, { queue->buffer(std::as_bytes(std::span(&zeroes, 1))) });
    ASSERT_EQ(complete(2).size(), 2u);
    EXPECT_EQ(status(first), BLOCK_STATUS_OK);
    EXPECT_EQ(status(second), BLOCK_STATUS_OK);
    auto const discarded = image_file.read(8 * SECTOR, 8 * SECTOR);
    auto const zeroed = image_file.read(32 * SECTOR, 16 * SECTOR);
    EXPECT_TRUE(std::all_of(discarded.begin(), discarded.end(), [](uint8_t b) { return b == 0; }));
    EXPECT_TRUE(std::all_of(zeroed.begin(), zeroed.end(), [](uint8_t b) { return b == 0; }));
    // The neighbours are untouched.
    EXPECT_EQ(image_file.read(16 * SECTOR, 1)[0], TempImage::pattern(16 * SECTOR));
    EXPECT_EQ(image_file.read(48 * SECTOR, 1)[0], TempImage::pattern(48 * SECTOR));
}

TEST_F(BlockDeviceTest, DiscardWithTwoSegmentsOrOutOfRange_IsIoError) {
    create();
    BlockRangeSegment const two[2] { { 0, 1, 0 }, { 8, 1, 0 } };
    BlockRangeSegment const beyond { DISK_SIZE / SECTOR - 1, 2, 0 };
    BlockRangeSegment const unmap_discard { 0, 1, 1 };
    auto const a = request(BLOCK_REQUEST_DISCARD, 0, { queue->buffer(std::as_bytes(std::span(two))) });
    auto const b = request(BLOCK_REQUEST_WRITE_ZEROES, 0, { queue->buffer(std::as_bytes(std::span(&beyond, 1))) });
    auto const c = request(BLOCK_REQUEST_DISCARD, 0, { queue->buffer(std::as_bytes(std::span(&unmap_discard, 1))) });
    ASSERT_EQ(complete(3).size(), 3u);
    EXPECT_EQ(status(a), BLOCK_STATUS_IOERR);
    EXPECT_EQ(status(b), BLOCK_STATUS_IOERR);
    EXPECT_EQ(status(c), BLOCK_STATUS_UNSUPP);
    EXPECT_EQ(image_file.read(0, 4096), [] {
        std::vector<uint8_t> v(4096);
        for (uint64_t i = 0; i < 4096; ++i)
            v[i] = TempImage::pattern(i);
        return v;
    }());
    EXPECT_EQ(block->errors(), 3u);
}

TEST_F(BlockDeviceTest, WritePastTheEnd_IsIoErrorAndTheFileIsUntouched) {
    create();
    auto const before = image_file.read(0, DISK_SIZE);
    auto const straddling = request(BLOCK_REQUEST_OUT, DISK_SIZE / SECTOR - 1, { data(filled(1024, 1)) });
    // A sector that makes sector * 512 overflow.
    auto const huge = request(BLOCK_REQUEST_OUT, ~uint64_t { 0 } / 256, { data(filled(512, 1)) });
    auto const read_past = request(BLOCK_REQUEST_IN, DISK_SIZE / SECTOR, { queue->writable_buffer(512) });
    ASSERT_EQ(complete(3).size(), 3u);
    EXPECT_EQ(status(straddling), BLOCK_STATUS_IOERR);
    EXPECT_EQ(status(huge), BLOCK_STATUS_IOERR);
    EXPECT_EQ(status(read_past), BLOCK_STATUS_IOERR);
    EXPECT_EQ(image_file.read(0, DISK_SIZE), before);
    struct stat info {};
    ASSERT_EQ(::stat(image_file.path().c_str(), &info), 0);
    EXPECT_EQ(static_cast<uint64_t>(info.st_size), DISK_SIZE);
    EXPECT_EQ(block->errors(), 3u);
    EXPECT_EQ(block->write_operations(), 0u);
}

TEST_F(BlockDeviceTest, ReadOnlyDisk_RefusesWritesAndOffersRo) {
    create({}, true);
    EXPECT_TRUE(has_feature(offered, BLOCK_FEATURE_RO));
    EXPECT_FALSE(has_feature(offered, BLOCK_FEATURE_DISCARD));
    auto const before = image_file.read(0, 4096);
    auto const write = request(BLOCK_REQUEST_OUT, 0, { data(filled(4096, 5)) });
    auto const buffer = queue->writable_buffer(512);
    auto const read = request(BLOCK_REQUEST_IN, 0, { buffer });
    ASSERT_EQ(complete(2).size(), 2u);
    EXPECT_EQ(status(write), BLOCK_STATUS_IOERR);
    EXPECT_EQ(status(read), BLOCK_STATUS_OK);
    EXPECT_EQ(image_file.read(0, 4096), before);
    EXPECT_EQ(guest_bytes(buffer.address, 512), std::vector<uint8_t>(before.begin(), before.begin() + 512));
}

TEST_F(BlockDeviceTest, MalformedRequests_GetIoErrorAndTheDeviceKeepsWorking) {
    create();
    // Header of 8 bytes only.
    auto const short_status = queue->writable_buffer(1);
    queue->add_chain({ data(std::vector<uint8_t>(8, 0)), short_status });
    // IN with its data in a device-readable buffer.
    auto const wrong_direction = request(BLOCK_REQUEST_IN, 0, { data(filled(512, 1)) });
    // OUT of 100 bytes: not a multiple of 512.
    auto const unaligned = request(BLOCK_REQUEST_OUT, 0, { data(filled(100, 1)) });
    // No writable byte at all: cannot be answered, returned with 0 bytes.
    uint16_t const no_status = queue->add_chain({ header(BLOCK_REQUEST_IN, 0) });
    // Unsupported type (GET_LIFETIME, 10).
    auto const unsupported = request(10, 0);
    // And a good request afterwards.
    auto const buffer = queue->writable_buffer(512);
    auto const good = request(BLOCK_REQUEST_IN, 1, { buffer });

    auto const used = complete(6);
    ASSERT_EQ(used.size(), 6u);
    EXPECT_EQ(MUST(memory.read_obj<uint8_t>(short_status.address)), BLOCK_STATUS_IOERR);
    EXPECT_EQ(status(wrong_direction), BLOCK_STATUS_IOERR);
    EXPECT_EQ(status(unaligned), BLOCK_STATUS_IOERR);
    EXPECT_EQ(status(unsupported), BLOCK_STATUS_UNSUPP);
    auto const unanswered = std::find_if(used.begin(), used.end(), [&](auto const& u) { return u.id == no_status; });
    ASSERT_NE(unanswered, used.end());
    EXPECT_EQ(unanswered->length, 0u);
    EXPECT_EQ(status(good), BLOCK_STATUS_OK);
    EXPECT_EQ(guest_bytes(buffer.address, 512), image_file.read(SECTOR, 512));
    EXPECT_EQ(block->errors(), 5u);
    EXPECT_EQ(driver->read32(0x70) & STATUS_DEVICE_NEEDS_RESET, 0u);
}

using kvmm::testing::ManualClock;

TEST_F(BlockDeviceTest, RateLimiter_DefersRequestsUntilTokensReturn) {
    ManualClock clock;
    RateLimitConfig config;
    config.ops = TokenBucketConfig { .size = 1, .one_time_burst = 0, .refill_time_ms = 20 };
    BlockOptions options;
    options.rate_limiter = MUST(RateLimiter::create(config, clock));
    create(std::move(options));
    auto const first = request(BLOCK_REQUEST_IN, 0, { queue->writable_buffer(512) });
    auto const second = request(BLOCK_REQUEST_IN, 1, { queue->writable_buffer(512) });
    auto used = complete(2, std::chrono::milliseconds(200)); // one op token: only the first goes
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].id, first.head);
    EXPECT_GE(block->rate_limited(), 1u);
    clock.advance(std::chrono::milliseconds(20));
    used = complete(1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].id, second.head);
    EXPECT_EQ(status(second), BLOCK_STATUS_OK);
}

TEST_F(BlockDeviceTest, RateLimiterUpdate_TakesEffectOnTheRunningDevice) {
    ManualClock clock;
    BlockOptions options;
    options.rate_limiter = MUST(RateLimiter::create(RateLimitConfig {}, clock)); // unlimited at first
    create(std::move(options));
    for (uint64_t i = 0; i < 4; ++i)
        request(BLOCK_REQUEST_IN, i, { queue->writable_buffer(512) });
    ASSERT_EQ(complete(4).size(), 4u);
    // One op a minute from now on: of two requests only the first goes.
    RateLimitConfig one_a_minute;
    one_a_minute.ops = TokenBucketConfig { .size = 1, .one_time_burst = 0, .refill_time_ms = 60000 };
    MUST(block->rate_limiter()->update(one_a_minute));
    auto const first = request(BLOCK_REQUEST_IN, 0, { queue->writable_buffer(512) });
    auto const second = request(BLOCK_REQUEST_IN, 1, { queue->writable_buffer(512) });
    auto used = complete(2, std::chrono::milliseconds(200));
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].id, first.head);
    EXPECT_GE(block->rate_limited(), 1u);
    // Lifting the limit lets the waiting request go at once, not a minute later.
    RateLimitConfig no_limit;
    no_limit.ops = TokenBucketConfig {};
    MUST(block->rate_limiter()->update(no_limit));
    used = complete(1, std::chrono::milliseconds(2000));
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].id, second.head);
    EXPECT_EQ(status(second), BLOCK_STATUS_OK);
}

TEST_F(BlockDeviceTest, ReplaceImage_CompletesOldRequestsThenServesTheNewImageWithItsCapacity) {
    create();
    TempImage other { 2 * DISK_SIZE };
    std::vector<uint8_t> const marker(SECTOR, 0xa5);
    {
        int const fd = ::open(other.path().c_str(), O_WRONLY | O_CLOEXEC);
        ASSERT_EQ(::pwrite(fd, marker.data(), marker.size(), 3 * SECTOR), static_cast<ssize_t>(SECTOR));
        ::close(fd);
    }
    uint32_t const generation = driver->read32(0xfc);
    // A read submitted to the old image, not yet completed, when the drive moves.
    auto const old_buffer = queue->writable_buffer(512);
    auto const in_flight = request(BLOCK_REQUEST_IN, 3, { old_buffer });
    driver->notify(0);
    (void)loop.run_once(std::chrono::milliseconds(0));
    auto replacement = MUST(DiskImage::open(other.path(), false));
    MUST(block->replace_image(std::move(replacement)));
    EXPECT_EQ(status(in_flight), BLOCK_STATUS_OK);
    EXPECT_EQ(guest_bytes(old_buffer.address, 512), image_file.read(3 * SECTOR, 512));
    // The driver is told: new capacity, new generation, a configuration-change interrupt.
    EXPECT_EQ(config32(0), 2 * DISK_SIZE / SECTOR);
    EXPECT_NE(driver->read32(0xfc), generation);
    EXPECT_NE(driver->read32(0x60) & INTERRUPT_CONFIG_CHANGE, 0u);
    EXPECT_EQ(block->image_path(), other.path());
    auto const new_buffer = queue->writable_buffer(512);
    auto const read = request(BLOCK_REQUEST_IN, 3, { new_buffer });
    auto const beyond_old_end = request(BLOCK_REQUEST_IN, DISK_SIZE / SECTOR + 1, { queue->writable_buffer(512) });
    ASSERT_EQ(complete(3).size(), 3u);
    EXPECT_EQ(status(read), BLOCK_STATUS_OK);
    EXPECT_EQ(guest_bytes(new_buffer.address, 512), marker);
    EXPECT_EQ(status(beyond_old_end), BLOCK_STATUS_OK);
    // The old image is closed and its lock released.
    EXPECT_TRUE(DiskImage::open(image_file.path(), false).has_value());
}

TEST_F(BlockDeviceTest, Qcow2OverlayOfTheImage_ServesTheBaseAndKeepsWritesInTheOverlay) {
    qcow2_path = image_file.path() + ".qcow2";
    MUST(qcow2::Image::create(qcow2_path, DISK_SIZE,
                              { .cluster_bits = 16, .backing_file = image_file.path(), .backing_format = {} }));
    create();
    EXPECT_EQ(config32(0), DISK_SIZE / SECTOR);
    EXPECT_EQ(block->image_format(), DiskFormat::Qcow2);
    auto const base_before = image_file.read(0, DISK_SIZE);
    auto const written = filled(4096, 5);
    auto const write = request(BLOCK_REQUEST_OUT, 9, { data(written) });
    auto const flush = request(BLOCK_REQUEST_FLUSH, 0);
    ASSERT_EQ(complete(2).size(), 2u);
    EXPECT_EQ(status(write), BLOCK_STATUS_OK);
    EXPECT_EQ(status(flush), BLOCK_STATUS_OK);
    auto const buffer = queue->writable_buffer(8192);
    auto const read = request(BLOCK_REQUEST_IN, 1, { buffer });
    ASSERT_EQ(complete(1).size(), 1u);
    EXPECT_EQ(status(read), BLOCK_STATUS_OK);
    auto expected = image_file.read(SECTOR, 8192);
    std::copy(written.begin(), written.end(), expected.begin() + 8 * SECTOR);
    EXPECT_EQ(guest_bytes(buffer.address, 8192), expected);
    EXPECT_EQ(image_file.read(0, DISK_SIZE), base_before);
    ::unlink(qcow2_path.c_str()); // the open image stays usable until the fixture closes it
}

TEST_F(BlockDeviceTest, ReplaceImageWithAnotherReadOnlyMode_IsRefusedAndTheOldImageStays) {
    create();
    TempImage other { DISK_SIZE };
    auto refused = block->replace_image(MUST(DiskImage::open(other.path(), true)));
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().message().find("read-only"), std::string::npos) << refused.error().message();
    EXPECT_EQ(block->image_path(), image_file.path());
    auto const buffer = queue->writable_buffer(512);
    auto const read = request(BLOCK_REQUEST_IN, 5, { buffer });
    ASSERT_EQ(complete(1).size(), 1u);
    EXPECT_EQ(status(read), BLOCK_STATUS_OK);
    EXPECT_EQ(guest_bytes(buffer.address, 512), image_file.read(5 * SECTOR, 512));
}

TEST_F(BlockDeviceTest, RefreshCapacity_AfterTheFileGrew_TellsTheDriverAndServesTheNewEnd) {
    create();
    uint32_t const generation = driver->read32(0xfc);
    MUST(block->refresh_capacity()); // unchanged size: nothing to tell
    EXPECT_EQ(driver->read32(0xfc), generation);
    EXPECT_EQ(driver->read32(0x60) & INTERRUPT_CONFIG_CHANGE, 0u);
    ASSERT_EQ(::truncate(image_file.path().c_str(), 2 * DISK_SIZE), 0);
    EXPECT_TRUE(block->uses_image(image_file.path()));
    MUST(block->refresh_capacity());
    EXPECT_EQ(config32(0), 2 * DISK_SIZE / SECTOR);
    EXPECT_NE(driver->read32(0xfc), generation);
    EXPECT_NE(driver->read32(0x60) & INTERRUPT_CONFIG_CHANGE, 0u);
    auto const read = request(BLOCK_REQUEST_IN, 2 * DISK_SIZE / SECTOR - 1, { queue->writable_buffer(512) });
    ASSERT_EQ(complete(1).size(), 1u);
    EXPECT_EQ(status(read), BLOCK_STATUS_OK);
}

TEST_F(BlockDeviceTest, ResetWithRequestsInFlight_WaitsForThemAndForgetsThem) {
    create();
    for (uint64_t i = 0; i < 32; ++i)
        request(BLOCK_REQUEST_IN, i, { queue->writable_buffer(512) });
    driver->notify(0);
    (void)loop.run_once(std::chrono::milliseconds(0)); // submits; completions not reaped yet
    driver->write32(0x70, 0);
    driver->run_event_loop(20);
    EXPECT_EQ(driver->read32(0x70), 0u);
    // Re-initialise: the device works again on a fresh queue->
    queue = std::make_unique<DriverQueue>(memory, GuestAddress(0x10000), BlockDevice::QUEUE_SIZE);
    ASSERT_EQ(driver->initialize(feature_bit(FEATURE_RING_EVENT_IDX), { queue.get() }) & STATUS_DRIVER_OK,
              STATUS_DRIVER_OK);
    auto const buffer = queue->writable_buffer(512);
    auto const read = request(BLOCK_REQUEST_IN, 2, { buffer });
    ASSERT_EQ(complete(1).size(), 1u);
    EXPECT_EQ(status(read), BLOCK_STATUS_OK);
    EXPECT_EQ(guest_bytes(buffer.address, 512), image_file.read(2 * SECTOR, 512));
}

// Write recording, on raw and qcow2 images with both engines: what completes is recorded in
// completion order with its data, and a flush says which records it made durable.
struct RecordingCase {
    DiskEngineKind engine;
    bool qcow2;
};

class BlockDeviceRecordingTest : public BlockDeviceTest, public ::testing::WithParamInterface<RecordingCase> {};

TEST_P(BlockDeviceRecordingTest, CompletedRequestsAreRecordedInOrderWithTheirData) {
    if (GetParam().qcow2) {
        qcow2_path = image_file.path() + ".qcow2";
        MUST(qcow2::Image::create(qcow2_path, DISK_SIZE,
                                  { .cluster_bits = 16, .backing_file = {}, .backing_format = {} }));
    }
    std::string const record_path = image_file.path() + ".log";
    BlockOptions options;
    options.engine = GetParam().engine;
    options.record_path = record_path;
    create(std::move(options));
    if (block->engine_kind() != GetParam().engine) {
        ::unlink(record_path.c_str());
        GTEST_SKIP() << "io_uring is not available here; the synchronous engine was used";
    }
    EXPECT_TRUE(block->recording());
    auto const first = filled(1024, 9), second = filled(3072, 4);
    request(BLOCK_REQUEST_OUT, 16, { data(first), data(second) });
    ASSERT_EQ(complete(1).size(), 1u);
    request(BLOCK_REQUEST_FLUSH, 0);
    ASSERT_EQ(complete(1).size(), 1u);
    BlockRangeSegment const discard { 64, 8, 0 };
    request(BLOCK_REQUEST_DISCARD, 0, { queue->buffer(std::as_bytes(std::span(&discard, 1))) });
    ASSERT_EQ(complete(1).size(), 1u);
    BlockRangeSegment const zeroes { 128, 16, 0 };
    request(BLOCK_REQUEST_WRITE_ZEROES, 0, { queue->buffer(std::as_bytes(std::span(&zeroes, 1))) });
    ASSERT_EQ(complete(1).size(), 1u);
    // Not recorded: a read, and a write the device refuses (past the end).
    request(BLOCK_REQUEST_IN, 0, { queue->writable_buffer(512) });
    request(BLOCK_REQUEST_OUT, DISK_SIZE / SECTOR, { data(filled(512, 1)) });
    ASSERT_EQ(complete(2).size(), 2u);

    auto const bytes = MUST(read_file(record_path, 1 << 20));
    ::unlink(record_path.c_str());
    if (!qcow2_path.empty())
        ::unlink(qcow2_path.c_str());
    auto const log = parse_write_log(bytes);
    ASSERT_TRUE(log) << log.error().message();
    EXPECT_EQ(log->header.capacity_sectors, DISK_SIZE / SECTOR);
    ASSERT_EQ(log->records.size(), 4u);
    EXPECT_EQ(log->records[0].type, WriteLogRecordType::Write);
    EXPECT_EQ(log->records[0].sector, 16u);
    auto expected = first;
    expected.insert(expected.end(), second.begin(), second.end());
    ASSERT_EQ(log->records[0].data.size(), expected.size());
    EXPECT_EQ(std::memcmp(log->records[0].data.data(), expected.data(), expected.size()), 0);
    EXPECT_EQ(log->records[1].type, WriteLogRecordType::Flush);
    EXPECT_EQ(log->records[1].flush_covers, 1u);
    EXPECT_EQ(log->records[2].type, WriteLogRecordType::Discard);
    EXPECT_EQ(log->records[2].sector, 64u);
    EXPECT_EQ(log->records[2].length, 8 * SECTOR);
    EXPECT_EQ(log->records[3].type, WriteLogRecordType::WriteZeroes);
    EXPECT_EQ(log->records[3].sector, 128u);
    EXPECT_EQ(log->records[3].length, 16 * SECTOR);
}

INSTANTIATE_TEST_SUITE_P(EnginesAndFormats, BlockDeviceRecordingTest,
                         ::testing::Values(RecordingCase { DiskEngineKind::Sync, false },
                                           RecordingCase { DiskEngineKind::IoUring, false },
                                           RecordingCase { DiskEngineKind::Sync, true },
                                           RecordingCase { DiskEngineKind::IoUring, true }),
                         [](auto const& param_info) {
                             return std::string(param_info.param.engine == DiskEngineKind::Sync ? "Sync" : "IoUring") +
                                    (param_info.param.qcow2 ? "Qcow2" : "Raw");
                         });

TEST_F(BlockDeviceTest, RecordingWriteThrough_EachWriteIsFollowedByAFlushCoveringIt) {
    std::string const record_path = image_file.path() + ".log";
    BlockOptions options;
    options.write_through = true;
    options.record_path = record_path;
    create(std::move(options));
    request(BLOCK_REQUEST_OUT, 0, { data(filled(512, 2)) });
    ASSERT_EQ(complete(1).size(), 1u);
    auto const bytes = MUST(read_file(record_path, 1 << 20));
    ::unlink(record_path.c_str());
    auto const log = parse_write_log(bytes);
    ASSERT_TRUE(log) << log.error().message();
    ASSERT_EQ(log->records.size(), 2u);
    EXPECT_EQ(log->records[1].type, WriteLogRecordType::Flush);
    EXPECT_EQ(log->records[1].flush_covers, 1u);
}

TEST_F(BlockDeviceTest, RecordingToAnExistingFile_FailsTheDriveAndKeepsTheFile) {
    std::string const record_path = image_file.path() + ".log";
    int const fd = ::open(record_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, "keep", 4), 4);
    ::close(fd);
    auto image = MUST(DiskImage::open(image_file.path(), false, DiskFormat::Raw));
    BlockOptions options;
    options.record_path = record_path;
    auto device = BlockDevice::create(std::move(image), loop, std::move(options));
    ASSERT_FALSE(device);
    EXPECT_NE(device.error().message().find(record_path), std::string::npos) << device.error().message();
    auto const kept = MUST(read_file(record_path, 100));
    ::unlink(record_path.c_str());
    EXPECT_EQ(kept.size(), 4u);
}

// End to end: a guest that acknowledges a record only after its flush completed passes every
// crash state of the drive's recording; one that acknowledges before flushing fails some.
TEST_F(BlockDeviceTest, RecordingOfAGuestThatFlushesBeforeAcknowledging_PassesTheCrashCheck) {
    std::string const base = image_file.path() + ".base";
    ASSERT_EQ(std::system(fmt::format("cp {} {}", image_file.path(), base).c_str()), 0);
    std::string const record_path = image_file.path() + ".log";
    BlockOptions options;
    options.record_path = record_path;
    create(std::move(options));
    auto to_bytes = [](std::vector<std::byte> const& bytes) {
        return std::vector<uint8_t>(reinterpret_cast<uint8_t const*>(bytes.data()),
                                    reinterpret_cast<uint8_t const*>(bytes.data()) + bytes.size());
    };
    std::vector<std::byte> const payload(1000, std::byte { 0x5a });
    for (uint64_t number = 1; number <= 3; ++number) {
        request(BLOCK_REQUEST_OUT, 64 + number * 8, { data(to_bytes(encode_crash_record(number, payload))) });
        ASSERT_EQ(complete(1).size(), 1u);
        if (number != 3) { // record 3 is acknowledged without a flush: the guest's bug
            request(BLOCK_REQUEST_FLUSH, 0);
            ASSERT_EQ(complete(1).size(), 1u);
        }
        request(BLOCK_REQUEST_OUT, 0, { data(to_bytes(encode_crash_ack(number))) });
        ASSERT_EQ(complete(1).size(), 1u);
    }
    request(BLOCK_REQUEST_FLUSH, 0);
    ASSERT_EQ(complete(1).size(), 1u);
    auto const bytes = MUST(read_file(record_path, 1 << 20));
    ::unlink(record_path.c_str());
    auto const log = parse_write_log(bytes);
    ASSERT_TRUE(log) << log.error().message();
    ASSERT_EQ(log->records.size(), 9u);
    CrashCheckOptions check;
    check.samples_per_interval = 64;
    auto const report = check_crash_states(base, *log, check);
    ::unlink(base.c_str());
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_GT(report->states_checked, 64u * 3);
    ASSERT_FALSE(report->failures.empty());
    for (auto const& failure : report->failures) {
        // Only states cut after the third acknowledgement (record 7) and before the last flush.
        EXPECT_EQ(failure.state.cut, 8u) << describe_crash_state(failure.state);
        EXPECT_NE(failure.reason.find("first: record 3"), std::string::npos) << failure.reason;
    }
}

} // namespace
} // namespace kvmm::virtio

#include "devices/virtio/block/block_request.h"

#include "devices/virtio/testing/driver_queue.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace kvmm::virtio {
namespace {

using testing::DriverBuffer;
using testing::DriverQueue;

constexpr uint64_t CAPACITY = 2048; // sectors: a 1 MiB disk
constexpr BlockRequestLimits LIMITS { 64 * 1024, 1u << 22, 1u << 16 };

template <typename T>
std::vector<std::byte> bytes_of(T const& value) {
    std::vector<std::byte> bytes(sizeof(T));
    std::memcpy(bytes.data(), &value, sizeof(T));
    return bytes;
}

std::vector<std::byte> header(uint32_t type, uint64_t sector = 0) {
    return bytes_of(BlockRequestHeader { type, 0, sector });
}

std::vector<std::byte> concat(std::vector<std::byte> a, std::vector<std::byte> const& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

class BlockRequestTest : public ::testing::Test {
protected:
    // Offers `buffers` as one chain, pops it (with the queue's checks) and parses it.
    ParsedBlockRequest parse(std::vector<DriverBuffer> const& buffers, uint64_t capacity = CAPACITY,
                             bool read_only = false, BlockRequestLimits const& limits = LIMITS) {
        driver.add_chain(buffers);
        auto const popped = queue.pop(chain);
        EXPECT_TRUE(popped && *popped) << "the test's chain did not pop";
        auto parsed = parse_block_request(memory, chain, capacity, read_only, limits);
        EXPECT_TRUE(parsed) << parsed.error().message();
        return parsed ? *parsed : ParsedBlockRequest {};
    }
    BlockRequest accepted(ParsedBlockRequest const& parsed) {
        if (auto const* rejected = std::get_if<BlockRequestRejection>(&parsed)) {
            ADD_FAILURE() << "rejected: " << rejected->reason;
            return {};
        }
        return std::get<BlockRequest>(parsed);
    }
    BlockRequestRejection rejected(ParsedBlockRequest const& parsed) {
        if (std::holds_alternative<BlockRequest>(parsed)) {
            ADD_FAILURE() << "accepted";
            return {};
        }
        return std::get<BlockRequestRejection>(parsed);
    }
    DriverBuffer status() { return driver.writable_buffer(1); }
    DriverBuffer range(uint64_t sector, uint32_t sectors, uint32_t flags = 0) {
        return driver.buffer(bytes_of(BlockRangeSegment { sector, sectors, flags }));
    }

    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 4 << 20 } });
    DriverQueue driver { memory, GuestAddress(0x1000), 64 };
    Queue queue = *Queue::create(memory, driver.config(), feature_bit(FEATURE_RING_INDIRECT_DESC));
    DescriptorChain chain;
};

TEST_F(BlockRequestTest, Read_NamesSectorLengthStatusAndTheWritableDataBuffers) {
    auto const first = driver.writable_buffer(512);
    auto const second = driver.writable_buffer(1024);
    auto const status_byte = status();
    auto const request = accepted(parse({ driver.buffer(header(BLOCK_REQUEST_IN, 7)), first, second, status_byte }));
    EXPECT_EQ(request.type, BLOCK_REQUEST_IN);
    EXPECT_EQ(request.sector, 7u);
    EXPECT_EQ(request.length, 1536u);
    EXPECT_EQ(request.status, status_byte.address);
    ASSERT_EQ(request.data_segments.size(), 3u) << "the writable part, status included";
    EXPECT_EQ(request.data_segments[0].address, first.address);
    EXPECT_EQ(request.data_offset, 0u);
}

TEST_F(BlockRequestTest, Write_DataStartsAfterTheHeaderEvenInsideOneDescriptor) {
    std::vector<std::byte> data(512, std::byte { 0x5a });
    auto const request = accepted(parse({ driver.buffer(concat(header(BLOCK_REQUEST_OUT, 3), data)), status() }));
    EXPECT_EQ(request.type, BLOCK_REQUEST_OUT);
    EXPECT_EQ(request.sector, 3u);
    EXPECT_EQ(request.length, 512u);
    ASSERT_EQ(request.data_segments.size(), 1u);
    EXPECT_EQ(request.data_offset, sizeof(BlockRequestHeader));
}

TEST_F(BlockRequestTest, StatusIsTheLastWritableByteAndTrailingEmptyBuffersDoNotCount) {
    auto const data_and_status = driver.writable_buffer(513);
    auto const request = accepted(parse(
        { driver.buffer(header(BLOCK_REQUEST_IN)), data_and_status, DriverBuffer { driver.allocate(1), 0, true } }));
    EXPECT_EQ(request.status, data_and_status.address.offset(512));
    EXPECT_EQ(request.length, 512u);
}

TEST_F(BlockRequestTest, ChainWithoutAWritableByte_CannotBeAnswered) {
    auto const refused = rejected(parse({ driver.buffer(header(BLOCK_REQUEST_IN)) }));
    EXPECT_FALSE(refused.status);
    auto const empty_only =
        rejected(parse({ driver.buffer(header(BLOCK_REQUEST_IN)), DriverBuffer { driver.allocate(1), 0, true } }));
    EXPECT_FALSE(empty_only.status);
}

TEST_F(BlockRequestTest, ShortHeader_IsIoError) {
    auto const status_byte = status();
    auto const refused = rejected(parse({ driver.buffer(std::vector<std::byte>(15)), status_byte }));
    ASSERT_TRUE(refused.status);
    EXPECT_EQ(*refused.status, status_byte.address);
    EXPECT_EQ(refused.status_value, BLOCK_STATUS_IOERR);
    EXPECT_NE(refused.reason.find("header is 15 bytes"), std::string::npos) << refused.reason;
}

TEST_F(BlockRequestTest, DataInTheWrongDirection_IsIoError) {
    auto const read_with_readable_data =
        rejected(parse({ driver.buffer(concat(header(BLOCK_REQUEST_IN), std::vector<std::byte>(512))), status() }));
    EXPECT_EQ(read_with_readable_data.status_value, BLOCK_STATUS_IOERR);
    EXPECT_NE(read_with_readable_data.reason.find("wrong direction"), std::string::npos);
    auto const write_with_writable_data =
        rejected(parse({ driver.buffer(header(BLOCK_REQUEST_OUT)), driver.writable_buffer(513) }));
    EXPECT_NE(write_with_writable_data.reason.find("wrong direction"), std::string::npos);
}

TEST_F(BlockRequestTest, ReadOnlyDisk_RefusesWritesDiscardsAndWriteZeroesButNotReads) {
    auto const write =
        rejected(parse({ driver.buffer(concat(header(BLOCK_REQUEST_OUT), std::vector<std::byte>(512))), status() },
                       CAPACITY, true));
    EXPECT_NE(write.reason.find("read-only"), std::string::npos);
    for (uint32_t const type : { BLOCK_REQUEST_DISCARD, BLOCK_REQUEST_WRITE_ZEROES }) {
        auto const range_request =
            rejected(parse({ driver.buffer(header(type)), range(0, 8), status() }, CAPACITY, true));
        EXPECT_NE(range_request.reason.find("read-only"), std::string::npos) << type;
    }
    auto const read = accepted(
        parse({ driver.buffer(header(BLOCK_REQUEST_IN)), driver.writable_buffer(512), status() }, CAPACITY, true));
    EXPECT_EQ(read.length, 512u);
}

TEST_F(BlockRequestTest, LengthNotAWholeNumberOfSectors_IsIoError) {
    auto const refused = rejected(parse({ driver.buffer(header(BLOCK_REQUEST_IN)), driver.writable_buffer(511) }));
    EXPECT_NE(refused.reason.find("not a multiple of 512"), std::string::npos) << refused.reason;
}

TEST_F(BlockRequestTest, RequestAtTheSizeLimitIsAcceptedAndOneSectorMoreIsNot) {
    BlockRequestLimits const small { 1024, 8, 8 };
    auto const at_limit =
        accepted(parse({ driver.buffer(header(BLOCK_REQUEST_IN)), driver.writable_buffer(1024), status() }, CAPACITY,
                       false, small));
    EXPECT_EQ(at_limit.length, 1024u);
    auto const over =
        rejected(parse({ driver.buffer(header(BLOCK_REQUEST_IN)), driver.writable_buffer(1536), status() }, CAPACITY,
                       false, small));
    EXPECT_NE(over.reason.find("larger than 1024"), std::string::npos) << over.reason;
}

TEST_F(BlockRequestTest, RangeEndingAtTheCapacityIsAcceptedAndOnePastIsNot) {
    auto const last = accepted(
        parse({ driver.buffer(header(BLOCK_REQUEST_IN, CAPACITY - 2)), driver.writable_buffer(1024), status() }));
    EXPECT_EQ(last.sector, CAPACITY - 2);
    auto const past = rejected(
        parse({ driver.buffer(header(BLOCK_REQUEST_IN, CAPACITY - 1)), driver.writable_buffer(1024), status() }));
    EXPECT_NE(past.reason.find("beyond the capacity"), std::string::npos) << past.reason;
    auto const empty_at_end =
        accepted(parse({ driver.buffer(header(BLOCK_REQUEST_IN, CAPACITY)), status() })); // nothing to read
    EXPECT_EQ(empty_at_end.length, 0u);
    auto const empty_past_end = rejected(parse({ driver.buffer(header(BLOCK_REQUEST_IN, CAPACITY + 1)), status() }));
    EXPECT_EQ(empty_past_end.status_value, BLOCK_STATUS_IOERR);
}

TEST_F(BlockRequestTest, SectorsThatWouldOverflowAreRefused) {
    for (uint64_t const sector : { UINT64_MAX, UINT64_MAX / 512, UINT64_MAX - 1 }) {
        auto const refused =
            rejected(parse({ driver.buffer(header(BLOCK_REQUEST_IN, sector)), driver.writable_buffer(512), status() }));
        EXPECT_NE(refused.reason.find("beyond the capacity"), std::string::npos) << sector;
        auto const range_refused =
            rejected(parse({ driver.buffer(header(BLOCK_REQUEST_DISCARD)), range(sector, 8), status() }));
        EXPECT_NE(range_refused.reason.find("beyond the capacity"), std::string::npos) << sector;
    }
}

TEST_F(BlockRequestTest, FlushAndGetIdCarryNoDataRange) {
    auto const flush = accepted(parse({ driver.buffer(header(BLOCK_REQUEST_FLUSH, 99)), status() }));
    EXPECT_EQ(flush.type, BLOCK_REQUEST_FLUSH);
    EXPECT_EQ(flush.sector, 0u) << "a flush's sector is not a position";
    EXPECT_EQ(flush.length, 0u);
    auto const get_id = accepted(parse({ driver.buffer(header(BLOCK_REQUEST_GET_ID)), driver.writable_buffer(33) }));
    EXPECT_EQ(get_id.length, BLOCK_ID_BYTES) << "at most 20 ID bytes, whatever the buffer";
    auto const short_id = accepted(parse({ driver.buffer(header(BLOCK_REQUEST_GET_ID)), driver.writable_buffer(9) }));
    EXPECT_EQ(short_id.length, 8u) << "the bytes before the status";
}

TEST_F(BlockRequestTest, UnknownType_IsUnsupported) {
    auto const refused = rejected(parse({ driver.buffer(header(7)), status() }));
    EXPECT_EQ(refused.status_value, BLOCK_STATUS_UNSUPP);
}

TEST_F(BlockRequestTest, DiscardAndWriteZeroes_NameTheirRange) {
    auto const discard = accepted(parse({ driver.buffer(header(BLOCK_REQUEST_DISCARD)), range(16, 8), status() }));
    EXPECT_EQ(discard.sector, 16u);
    EXPECT_EQ(discard.length, 8 * 512u);
    EXPECT_FALSE(discard.may_unmap);
    auto const zeroes = accepted(
        parse({ driver.buffer(concat(header(BLOCK_REQUEST_WRITE_ZEROES), bytes_of(BlockRangeSegment { 32, 4, 1 }))),
                status() }));
    EXPECT_EQ(zeroes.sector, 32u);
    EXPECT_EQ(zeroes.length, 4 * 512u);
    EXPECT_TRUE(zeroes.may_unmap);
}

TEST_F(BlockRequestTest, MalformedRanges_AreRefusedWithTheRightStatus) {
    struct Case {
        char const* name;
        uint32_t type;
        std::vector<std::byte> payload;
        uint8_t status;
    } const cases[] = {
        { "no segment", BLOCK_REQUEST_DISCARD, {}, BLOCK_STATUS_IOERR },
        { "a partial segment", BLOCK_REQUEST_DISCARD, std::vector<std::byte>(12), BLOCK_STATUS_IOERR },
        { "two segments", BLOCK_REQUEST_WRITE_ZEROES,
          concat(bytes_of(BlockRangeSegment { 0, 1, 0 }), bytes_of(BlockRangeSegment { 8, 1, 0 })),
          BLOCK_STATUS_IOERR },
        { "unmap on a discard", BLOCK_REQUEST_DISCARD, bytes_of(BlockRangeSegment { 0, 8, 1 }), BLOCK_STATUS_UNSUPP },
        { "unknown flags", BLOCK_REQUEST_WRITE_ZEROES, bytes_of(BlockRangeSegment { 0, 8, 2 }), BLOCK_STATUS_UNSUPP },
        { "over the discard limit", BLOCK_REQUEST_DISCARD, bytes_of(BlockRangeSegment { 0, (1u << 22) + 1, 0 }),
          BLOCK_STATUS_IOERR },
        { "over the write-zeroes limit", BLOCK_REQUEST_WRITE_ZEROES,
          bytes_of(BlockRangeSegment { 0, (1u << 16) + 1, 0 }), BLOCK_STATUS_IOERR },
        { "past the end", BLOCK_REQUEST_DISCARD, bytes_of(BlockRangeSegment { CAPACITY - 4, 8, 0 }),
          BLOCK_STATUS_IOERR },
    };
    for (auto const& test_case : cases) {
        auto const refused =
            rejected(parse({ driver.buffer(concat(header(test_case.type), test_case.payload)), status() }));
        EXPECT_EQ(refused.status_value, test_case.status) << test_case.name << ": " << refused.reason;
        EXPECT_TRUE(refused.status) << test_case.name;
    }
}

TEST_F(BlockRequestTest, ParsingWritesNothingToGuestMemory) {
    auto const data = driver.writable_buffer(512);
    auto const status_byte = status();
    ASSERT_TRUE(memory.write_obj(status_byte.address, uint8_t { 0xa5 }));
    (void)accepted(parse({ driver.buffer(header(BLOCK_REQUEST_IN)), data, status_byte }));
    (void)rejected(parse({ driver.buffer(header(42)), status_byte }));
    EXPECT_EQ(*memory.read_obj<uint8_t>(status_byte.address), 0xa5) << "answering is the device's job";
    EXPECT_EQ(driver.read(data.address, 512), std::vector<std::byte>(512));
}

} // namespace
} // namespace kvmm::virtio

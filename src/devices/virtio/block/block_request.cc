#include "devices/virtio/block/block_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>

// The specification's le32/le64 fields are read as native integers on little-endian x86-64.
static_assert(std::endian::native == std::endian::little);

namespace kvmm::virtio {

namespace {

// The status byte is the last device-writable byte of the chain (5.2.6); zero-length
// descriptors at the end do not count.
std::optional<GuestAddress> last_writable_byte(std::span<ChainSegment const> writable) {
    for (auto it = writable.rbegin(); it != writable.rend(); ++it) {
        if (it->length > 0)
            return it->address.offset(it->length - 1);
    }
    return std::nullopt;
}

// sector + length / 512 <= capacity, written so that nothing overflows.
bool range_in_capacity(uint64_t sector, uint64_t length_bytes, uint64_t capacity_sectors) {
    return sector <= capacity_sectors && length_bytes / BLOCK_SECTOR_SIZE <= capacity_sectors - sector;
}

ParsedBlockRequest rejection(GuestAddress status, uint8_t value, std::string reason) {
    return BlockRequestRejection { status, value, std::move(reason) };
}

ParsedBlockRequest parse_data_request(DescriptorChain const& chain, BlockRequestHeader const& header,
                                      GuestAddress status, uint64_t capacity_sectors, bool read_only,
                                      BlockRequestLimits const& limits) {
    char const* const name = block_request_type_name(header.type);
    bool const is_read = header.type == BLOCK_REQUEST_IN;
    uint64_t const readable_data = chain.readable_length() - sizeof(header);
    uint64_t const writable_data = chain.writable_length() - 1;
    // 5.2.6.1: IN data is device-writable, OUT data device-readable; never both.
    uint64_t const wrong_direction = is_read ? readable_data : writable_data;
    if (wrong_direction != 0)
        return rejection(status, BLOCK_STATUS_IOERR,
                         fmt::format("{} request has {} data bytes in the wrong direction", name, wrong_direction));
    if (!is_read && read_only)
        return rejection(status, BLOCK_STATUS_IOERR, "OUT request on a read-only disk");
    uint64_t const length = is_read ? writable_data : readable_data;
    if (length % BLOCK_SECTOR_SIZE != 0)
        return rejection(status, BLOCK_STATUS_IOERR,
                         fmt::format("{} request of {} bytes is not a multiple of {}", name, length,
                                     BLOCK_SECTOR_SIZE));
    // A driver that honours size_max and seg_max (5.2.4) never sends more.
    if (length > limits.max_request_bytes)
        return rejection(status, BLOCK_STATUS_IOERR,
                         fmt::format("{} request of {} bytes is larger than {} (seg_max x size_max)", name, length,
                                     limits.max_request_bytes));
    if (!range_in_capacity(header.sector, length, capacity_sectors))
        return rejection(status, BLOCK_STATUS_IOERR,
                         fmt::format("{} request at sector {} for {} bytes ends beyond the capacity of {} sectors",
                                     name, header.sector, length, capacity_sectors));
    BlockRequest request;
    request.type = header.type;
    request.status = status;
    request.sector = header.sector;
    request.length = length;
    request.data_segments = is_read ? chain.writable() : chain.readable();
    request.data_offset = is_read ? 0 : sizeof(header);
    return request;
}

Expected<ParsedBlockRequest> parse_range_request(GuestMemory const& memory, DescriptorChain const& chain,
                                                 BlockRequestHeader const& header, GuestAddress status,
                                                 uint64_t capacity_sectors, bool read_only,
                                                 BlockRequestLimits const& limits) {
    bool const is_discard = header.type == BLOCK_REQUEST_DISCARD;
    char const* const name = block_request_type_name(header.type);
    if (read_only)
        return rejection(status, BLOCK_STATUS_IOERR, fmt::format("{} request on a read-only disk", name));
    uint64_t const payload = chain.readable_length() - sizeof(header);
    if (payload == 0 || payload % sizeof(BlockRangeSegment) != 0)
        return rejection(status, BLOCK_STATUS_IOERR,
                         fmt::format("{} payload of {} bytes is not a whole number of 16-byte segments", name,
                                     payload));
    // max_discard_seg = max_write_zeroes_seg = 1 (5.2.4).
    if (payload / sizeof(BlockRangeSegment) > 1)
        return rejection(status, BLOCK_STATUS_IOERR,
                         fmt::format("{} request has {} segments, at most 1 is supported", name,
                                     payload / sizeof(BlockRangeSegment)));
    BlockRangeSegment segment {};
    TRY(chain.read(memory, sizeof(header), std::as_writable_bytes(std::span(&segment, 1))));
    // 5.2.6.2: unknown flags, and unmap on a discard, are UNSUPP.
    if ((segment.flags & ~BLOCK_RANGE_FLAG_UNMAP) != 0 || (is_discard && (segment.flags & BLOCK_RANGE_FLAG_UNMAP) != 0))
        return rejection(status, BLOCK_STATUS_UNSUPP,
                         fmt::format("{} request with unsupported flags {:#x}", name, segment.flags));
    uint32_t const limit = is_discard ? limits.max_discard_sectors : limits.max_write_zeroes_sectors;
    if (segment.num_sectors > limit)
        return rejection(status, BLOCK_STATUS_IOERR,
                         fmt::format("{} request of {} sectors exceeds the limit of {}", name, segment.num_sectors,
                                     limit));
    uint64_t const length = uint64_t { segment.num_sectors } * BLOCK_SECTOR_SIZE;
    if (!range_in_capacity(segment.sector, length, capacity_sectors))
        return rejection(status, BLOCK_STATUS_IOERR,
                         fmt::format("{} request at sector {} for {} sectors ends beyond the capacity of {} sectors",
                                     name, segment.sector, segment.num_sectors, capacity_sectors));
    BlockRequest request;
    request.type = header.type;
    request.status = status;
    request.sector = segment.sector;
    request.length = length;
    request.may_unmap = (segment.flags & BLOCK_RANGE_FLAG_UNMAP) != 0;
    return ParsedBlockRequest(request);
}

} // namespace

char const* block_request_type_name(uint32_t type) {
    switch (type) {
    case BLOCK_REQUEST_IN:
        return "IN";
    case BLOCK_REQUEST_OUT:
        return "OUT";
    case BLOCK_REQUEST_FLUSH:
        return "FLUSH";
    case BLOCK_REQUEST_GET_ID:
        return "GET_ID";
    case BLOCK_REQUEST_DISCARD:
        return "DISCARD";
    case BLOCK_REQUEST_WRITE_ZEROES:
        return "WRITE_ZEROES";
    default:
        return "unknown";
    }
}

Expected<ParsedBlockRequest> parse_block_request(GuestMemory const& memory, DescriptorChain const& chain,
                                                 uint64_t capacity_sectors, bool read_only,
                                                 BlockRequestLimits const& limits) {
    auto const status = last_writable_byte(chain.writable());
    if (!status)
        return ParsedBlockRequest(
            BlockRequestRejection { std::nullopt, BLOCK_STATUS_IOERR, "it has no device-writable status byte" });
    BlockRequestHeader header {};
    auto const copied = TRY(chain.read(memory, 0, std::as_writable_bytes(std::span(&header, 1))));
    if (copied < sizeof(header))
        return rejection(*status, BLOCK_STATUS_IOERR,
                         fmt::format("request header is {} bytes, {} expected", copied, sizeof(header)));
    switch (header.type) {
    case BLOCK_REQUEST_IN:
    case BLOCK_REQUEST_OUT:
        return parse_data_request(chain, header, *status, capacity_sectors, read_only, limits);
    case BLOCK_REQUEST_FLUSH: {
        BlockRequest request;
        request.type = header.type;
        request.status = *status;
        return ParsedBlockRequest(request);
    }
    case BLOCK_REQUEST_GET_ID: {
        BlockRequest request;
        request.type = header.type;
        request.status = *status;
        // 5.2.6: the ID goes into the writable bytes before the status, 20 at most.
        request.length = std::min<uint64_t>(chain.writable_length() - 1, BLOCK_ID_BYTES);
        return ParsedBlockRequest(request);
    }
    case BLOCK_REQUEST_DISCARD:
    case BLOCK_REQUEST_WRITE_ZEROES:
        return parse_range_request(memory, chain, header, *status, capacity_sectors, read_only, limits);
    default:
        return rejection(*status, BLOCK_STATUS_UNSUPP, fmt::format("unsupported request type {}", header.type));
    }
}

} // namespace kvmm::virtio

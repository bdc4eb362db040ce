// The virtio-blk request format (virtio 1.2 section 5.2.6) and its parser: a pure function
// from a popped descriptor chain, the guest memory it points into and the disk's size and
// limits to either a request the device may execute or the answer it gets instead. No I/O,
// no state: BlockDevice executes what this returns, and the tests and the block fuzzer call
// it directly.
//
// A request is one chain: a 16-byte header {type, reserved, sector} in device-readable
// memory, then the data (device-readable for OUT, device-writable for IN, a discard /
// write-zeroes segment list for those), and one status byte, the last device-writable byte.
// The driver may frame it any way it likes (2.6.4), so none of these need start or end on a
// descriptor. Everything here is checked before any I/O: the header's size, the data's
// direction, sizes in whole sectors and within the limits, an overflow-checked range inside the
// capacity, writes to a read-only disk, discard and write-zeroes segments and flags.
//
// Threading: pure; callable from any thread on memory no one changes meanwhile (the device
// calls it on its event-loop thread, where the driver's later changes do not matter: every
// value is copied out of guest memory once and checked).
#pragma once

#include "base/expected.h"
#include "devices/virtio/queue.h"
#include "memory/guest_memory.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>

namespace kvmm::virtio {

// Request types and status values (5.2.6).
inline constexpr uint32_t BLOCK_REQUEST_IN = 0;
inline constexpr uint32_t BLOCK_REQUEST_OUT = 1;
inline constexpr uint32_t BLOCK_REQUEST_FLUSH = 4;
inline constexpr uint32_t BLOCK_REQUEST_GET_ID = 8;
inline constexpr uint32_t BLOCK_REQUEST_DISCARD = 11;
inline constexpr uint32_t BLOCK_REQUEST_WRITE_ZEROES = 13;
inline constexpr uint8_t BLOCK_STATUS_OK = 0;
inline constexpr uint8_t BLOCK_STATUS_IOERR = 1;
inline constexpr uint8_t BLOCK_STATUS_UNSUPP = 2;

inline constexpr uint64_t BLOCK_SECTOR_SIZE = 512;
inline constexpr size_t BLOCK_ID_BYTES = 20; // VIRTIO_BLK_ID_BYTES
// struct virtio_blk_discard_write_zeroes flags: unmap (write zeroes only).
inline constexpr uint32_t BLOCK_RANGE_FLAG_UNMAP = 1;

// The request header (5.2.6 struct virtio_blk_req, first part).
struct BlockRequestHeader {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
static_assert(sizeof(BlockRequestHeader) == 16);

// One discard / write-zeroes range (5.2.6 struct virtio_blk_discard_write_zeroes).
struct BlockRangeSegment {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags; // bit 0: unmap (write zeroes only)
};
static_assert(sizeof(BlockRangeSegment) == 16);

// What the device offers in its configuration space (5.2.4) and enforces here.
struct BlockRequestLimits {
    // IN/OUT data bytes per request (seg_max x size_max).
    uint64_t max_request_bytes { 0 };
    uint32_t max_discard_sectors { 0 };
    uint32_t max_write_zeroes_sectors { 0 };
};

// A well-formed request the device may execute.
struct BlockRequest {
    uint32_t type { 0 };
    // The status byte.
    GuestAddress status { 0 };
    // IN/OUT: the header's sector; DISCARD/WRITE_ZEROES: the range's first sector; else 0.
    uint64_t sector { 0 };
    // IN/OUT: data bytes; DISCARD/WRITE_ZEROES: bytes of the range (both may be 0: nothing to
    // do); GET_ID: how many ID bytes fit (at most BLOCK_ID_BYTES); FLUSH: 0.
    uint64_t length { 0 };
    // IN/OUT: the data, `length` bytes starting `data_offset` bytes into these segments of the
    // chain (its writable part for IN, its readable part after the header for OUT). Views into
    // the parsed chain, valid while it is.
    std::span<ChainSegment const> data_segments;
    uint64_t data_offset { 0 };
    // WRITE_ZEROES: the driver allows the range to be unmapped.
    bool may_unmap { false };
};

// A request the device answers without I/O, and why (for the device's rate-limited log).
struct BlockRequestRejection {
    // Where the status goes; absent when the chain has no device-writable byte at all: then the
    // request cannot be answered, only returned.
    std::optional<GuestAddress> status;
    uint8_t status_value { BLOCK_STATUS_IOERR };
    std::string reason;
};

using ParsedBlockRequest = std::variant<BlockRequest, BlockRequestRejection>;

// Parses `chain` as a request to a disk of `capacity_sectors` sectors. An Error only when guest
// memory inside the chain cannot be read (the queue checked every segment, so never for a
// validated chain); every malformed request is a BlockRequestRejection.
Expected<ParsedBlockRequest> parse_block_request(GuestMemory const& memory, DescriptorChain const& chain,
                                                 uint64_t capacity_sectors, bool read_only,
                                                 BlockRequestLimits const& limits);

// The request type's name in the specification, for messages ("IN", "DISCARD", "unknown").
char const* block_request_type_name(uint32_t type);

} // namespace kvmm::virtio

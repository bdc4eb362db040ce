// The write-recording format: what a virtio-blk drive with recording on (--disk ...,record=PATH)
// appends for every write, discard, write-zeroes and flush that the guest's requests complete,
// in completion order, with the written data. Modelled on Linux's dm-log-writes
// (Documentation/admin-guide/device-mapper/log-writes.rst): a log that a checker replays onto
// the base image to build the states a power loss could leave (kvmm-crash-check).
//
// Layout (all integers little-endian, x86-64 hosts only):
//   file header, 32 bytes:
//     0  magic "KVMMWLOG"
//     8  u32 version (1)
//    12  u32 sector size (512)
//    16  u64 capacity in sectors when recording started
//    24  u32 flags (0)
//    28  u32 CRC-32 of bytes 0..27
//   then records, each a 48-byte header followed by `length` data bytes for writes only:
//     0  u32 magic "WREC"
//     4  u32 type (WriteLogRecordType)
//     8  u64 sequence: 0, 1, 2 ... in completion order, no gaps
//    16  u64 sector: first sector of the range (0 for a flush)
//    24  u64 length in bytes of the range (0 for a flush)
//    32  u64 flush: records with a sequence below this were completed before the flush was
//            submitted, so the flush made them durable (virtio 1.2 5.2.6.2: a flush covers the
//            writes completed before it); 0 for the other types
//    40  u32 CRC-32 of the data (0 when there is none)
//    44  u32 CRC-32 of header bytes 0..43
// A record header never straddles anything: a reader that meets a short or damaged tail (the
// recording process was killed mid-append) can report where the intact prefix ends.
#pragma once

#include "base/expected.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace kvmm {

enum class WriteLogRecordType : uint32_t { Write = 1, Discard = 2, WriteZeroes = 3, Flush = 4 };

inline constexpr uint32_t WRITE_LOG_VERSION = 1;
inline constexpr uint32_t WRITE_LOG_SECTOR_SIZE = 512;
inline constexpr size_t WRITE_LOG_HEADER_SIZE = 32;
inline constexpr size_t WRITE_LOG_RECORD_HEADER_SIZE = 48;
// A virtio-blk request moves at most a few MiB; a recorded length beyond this is damage.
inline constexpr uint64_t WRITE_LOG_MAX_RECORD_BYTES = 1ull << 32;

struct WriteLogHeader {
    uint64_t capacity_sectors { 0 };
};

// One record; for a write `data` views the recording's bytes (it lives as long as they do).
struct WriteLogRecord {
    uint64_t sequence { 0 };
    WriteLogRecordType type { WriteLogRecordType::Write };
    uint64_t sector { 0 };
    uint64_t length { 0 };
    uint64_t flush_covers { 0 };
    std::span<std::byte const> data;
};

struct ParsedWriteLog {
    WriteLogHeader header;
    std::vector<WriteLogRecord> records;
    // Bytes after the last intact record that did not form a record (a cut-off append); the
    // records before them are usable. 0 for a complete recording.
    uint64_t trailing_bytes { 0 };
};

uint32_t write_log_crc32(std::span<std::byte const> bytes, uint32_t crc = 0);

std::array<std::byte, WRITE_LOG_HEADER_SIZE> encode_write_log_header(WriteLogHeader const& header);
// The record header; `data_crc` is write_log_crc32 of the write's data (0 for other types).
std::array<std::byte, WRITE_LOG_RECORD_HEADER_SIZE> encode_write_log_record(WriteLogRecord const& record,
                                                                            uint32_t data_crc);

// Parses a whole recording. A bad file header, a record with a damaged checksum, a sequence
// out of order, an unknown type or a range past the capacity is an Error naming the record's
// offset and the value; only a truncated last record is tolerated (trailing_bytes).
// Untrusted input: never reads outside `bytes` (fuzz/write_log_fuzzer.cc).
Expected<ParsedWriteLog> parse_write_log(std::span<std::byte const> bytes);

std::string_view write_log_record_type_name(WriteLogRecordType type);

} // namespace kvmm

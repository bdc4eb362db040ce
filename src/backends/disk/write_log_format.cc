#include "backends/disk/write_log_format.h"

#include <zlib.h>

#include <bit>
#include <cstring>

// Integers are stored as the host's own: the format is little-endian and so are the hosts.
static_assert(std::endian::native == std::endian::little);

namespace kvmm {

namespace {

constexpr char HEADER_MAGIC[8] = { 'K', 'V', 'M', 'M', 'W', 'L', 'O', 'G' };
constexpr char RECORD_MAGIC[4] = { 'W', 'R', 'E', 'C' };

template <typename T>
void put(std::span<std::byte> out, size_t offset, T value) {
    std::memcpy(out.data() + offset, &value, sizeof(T));
}

template <typename T>
T get(std::span<std::byte const> in, size_t offset) {
    T value;
    std::memcpy(&value, in.data() + offset, sizeof(T));
    return value;
}

bool valid_type(uint32_t type) {
    return type >= static_cast<uint32_t>(WriteLogRecordType::Write) &&
           type <= static_cast<uint32_t>(WriteLogRecordType::Flush);
}

} // namespace

uint32_t write_log_crc32(std::span<std::byte const> bytes, uint32_t crc) {
    // zlib's crc32 takes a uInt length: feed large spans in pieces.
    while (!bytes.empty()) {
        size_t const piece = std::min<size_t>(bytes.size(), 1u << 30);
        crc =
            static_cast<uint32_t>(::crc32(crc, reinterpret_cast<Bytef const*>(bytes.data()), static_cast<uInt>(piece)));
        bytes = bytes.subspan(piece);
    }
    return crc;
}

std::string_view write_log_record_type_name(WriteLogRecordType type) {
    switch (type) {
    case WriteLogRecordType::Write:
        return "write";
    case WriteLogRecordType::Discard:
        return "discard";
    case WriteLogRecordType::WriteZeroes:
        return "write-zeroes";
    case WriteLogRecordType::Flush:
        return "flush";
    }
    return "unknown";
}

std::array<std::byte, WRITE_LOG_HEADER_SIZE> encode_write_log_header(WriteLogHeader const& header) {
    std::array<std::byte, WRITE_LOG_HEADER_SIZE> out {};
    std::memcpy(out.data(), HEADER_MAGIC, sizeof(HEADER_MAGIC));
    put<uint32_t>(out, 8, WRITE_LOG_VERSION);
    put<uint32_t>(out, 12, WRITE_LOG_SECTOR_SIZE);
    put<uint64_t>(out, 16, header.capacity_sectors);
    put<uint32_t>(out, 24, 0);
    put<uint32_t>(out, 28, write_log_crc32(std::span(out).first(28)));
    return out;
}

std::array<std::byte, WRITE_LOG_RECORD_HEADER_SIZE> encode_write_log_record(WriteLogRecord const& record,
                                                                            uint32_t data_crc) {
    std::array<std::byte, WRITE_LOG_RECORD_HEADER_SIZE> out {};
    std::memcpy(out.data(), RECORD_MAGIC, sizeof(RECORD_MAGIC));
    put<uint32_t>(out, 4, static_cast<uint32_t>(record.type));
    put<uint64_t>(out, 8, record.sequence);
    put<uint64_t>(out, 16, record.sector);
    put<uint64_t>(out, 24, record.length);
    put<uint64_t>(out, 32, record.flush_covers);
    put<uint32_t>(out, 40, data_crc);
    put<uint32_t>(out, 44, write_log_crc32(std::span(out).first(44)));
    return out;
}

Expected<ParsedWriteLog> parse_write_log(std::span<std::byte const> bytes) {
    if (bytes.size() < WRITE_LOG_HEADER_SIZE)
        return Error::format("recording is {} bytes, shorter than its {}-byte header", bytes.size(),
                             WRITE_LOG_HEADER_SIZE);
    if (std::memcmp(bytes.data(), HEADER_MAGIC, sizeof(HEADER_MAGIC)) != 0)
        return Error("recording does not start with the magic KVMMWLOG");
    if (auto const crc = get<uint32_t>(bytes, 28); crc != write_log_crc32(bytes.first(28)))
        return Error::format("recording header checksum {:#x} does not match its contents", crc);
    if (auto const version = get<uint32_t>(bytes, 8); version != WRITE_LOG_VERSION)
        return Error::format("recording version {} is not the supported {}", version, WRITE_LOG_VERSION);
    if (auto const sector_size = get<uint32_t>(bytes, 12); sector_size != WRITE_LOG_SECTOR_SIZE)
        return Error::format("recording sector size {} is not {}", sector_size, WRITE_LOG_SECTOR_SIZE);
    if (auto const flags = get<uint32_t>(bytes, 24); flags != 0)
        return Error::format("recording flags {:#x} are unknown", flags);

    ParsedWriteLog log;
    log.header.capacity_sectors = get<uint64_t>(bytes, 16);
    uint64_t const capacity_bytes = log.header.capacity_sectors > (UINT64_MAX / WRITE_LOG_SECTOR_SIZE)
                                        ? UINT64_MAX
                                        : log.header.capacity_sectors * WRITE_LOG_SECTOR_SIZE;
    size_t offset = WRITE_LOG_HEADER_SIZE;
    while (offset < bytes.size()) {
        auto const rest = bytes.subspan(offset);
        if (rest.size() < WRITE_LOG_RECORD_HEADER_SIZE) {
            log.trailing_bytes = rest.size();
            break;
        }
        if (std::memcmp(rest.data(), RECORD_MAGIC, sizeof(RECORD_MAGIC)) != 0)
            return Error::format("record at offset {} does not start with the magic WREC", offset);
        if (auto const crc = get<uint32_t>(rest, 44); crc != write_log_crc32(rest.first(44)))
            return Error::format("record at offset {}: header checksum {:#x} does not match", offset, crc);
        WriteLogRecord record;
        uint32_t const type = get<uint32_t>(rest, 4);
        if (!valid_type(type))
            return Error::format("record at offset {}: type {} is unknown", offset, type);
        record.type = static_cast<WriteLogRecordType>(type);
        record.sequence = get<uint64_t>(rest, 8);
        record.sector = get<uint64_t>(rest, 16);
        record.length = get<uint64_t>(rest, 24);
        record.flush_covers = get<uint64_t>(rest, 32);
        uint32_t const data_crc = get<uint32_t>(rest, 40);
        if (record.sequence != log.records.size())
            return Error::format("record at offset {}: sequence {} where {} was expected", offset, record.sequence,
                                 log.records.size());
        if (record.type == WriteLogRecordType::Flush) {
            if (record.sector != 0 || record.length != 0)
                return Error::format("record at offset {}: flush with sector {} and length {}", offset, record.sector,
                                     record.length);
            if (record.flush_covers > record.sequence)
                return Error::format("record at offset {}: flush {} covers records up to {}, after itself", offset,
                                     record.sequence, record.flush_covers);
        } else {
            if (record.flush_covers != 0)
                return Error::format("record at offset {}: {} with flush field {}", offset,
                                     write_log_record_type_name(record.type), record.flush_covers);
            if (record.length == 0 || record.length % WRITE_LOG_SECTOR_SIZE != 0 ||
                record.length > WRITE_LOG_MAX_RECORD_BYTES)
                return Error::format("record at offset {}: length {} is not a non-zero multiple of {} up to {}", offset,
                                     record.length, WRITE_LOG_SECTOR_SIZE, WRITE_LOG_MAX_RECORD_BYTES);
            // Both are bounded (capacity_bytes by the header, sector * 512 below it): no overflow.
            if (record.sector >= log.header.capacity_sectors ||
                record.length > capacity_bytes - record.sector * WRITE_LOG_SECTOR_SIZE)
                return Error::format("record at offset {}: {} bytes at sector {} run past the {} sectors", offset,
                                     record.length, record.sector, log.header.capacity_sectors);
        }
        size_t const data_size = record.type == WriteLogRecordType::Write ? static_cast<size_t>(record.length) : 0;
        if (record.type != WriteLogRecordType::Write && data_crc != 0)
            return Error::format("record at offset {}: {} with data checksum {:#x}", offset,
                                 write_log_record_type_name(record.type), data_crc);
        if (rest.size() - WRITE_LOG_RECORD_HEADER_SIZE < data_size) {
            log.trailing_bytes = rest.size();
            break;
        }
        record.data = rest.subspan(WRITE_LOG_RECORD_HEADER_SIZE, data_size);
        if (data_size != 0 && write_log_crc32(record.data) != data_crc)
            return Error::format("record at offset {}: data checksum {:#x} does not match its {} bytes", offset,
                                 data_crc, data_size);
        log.records.push_back(record);
        offset += WRITE_LOG_RECORD_HEADER_SIZE + data_size;
    }
    return log;
}

} // namespace kvmm

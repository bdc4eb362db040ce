#include "backends/disk/write_log_format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace kvmm {
namespace {

class WriteLogBuilder {
public:
    explicit WriteLogBuilder(uint64_t capacity_sectors) {
        auto header = encode_write_log_header(WriteLogHeader { capacity_sectors });
        m_bytes.assign(header.begin(), header.end());
    }
    void add(WriteLogRecordType type, uint64_t sector, std::vector<std::byte> const& data, uint64_t length = 0,
             uint64_t covers = 0) {
        WriteLogRecord record { m_sequence++, type, sector, data.empty() ? length : data.size(), covers, {} };
        auto header = encode_write_log_record(record, data.empty() ? 0 : write_log_crc32(data));
        m_bytes.insert(m_bytes.end(), header.begin(), header.end());
        m_bytes.insert(m_bytes.end(), data.begin(), data.end());
    }
    std::vector<std::byte>& bytes() { return m_bytes; }

private:
    std::vector<std::byte> m_bytes;
    uint64_t m_sequence { 0 };
};

std::vector<std::byte> filled(size_t size, uint8_t value) { return std::vector<std::byte>(size, std::byte { value }); }

TEST(WriteLogFormatTest, RecordsRoundTripInOrderWithTheirData) {
    WriteLogBuilder log(100);
    log.add(WriteLogRecordType::Write, 3, filled(1024, 0xab));
    log.add(WriteLogRecordType::Discard, 8, {}, 4096);
    log.add(WriteLogRecordType::WriteZeroes, 16, {}, 512);
    log.add(WriteLogRecordType::Flush, 0, {}, 0, 3);
    auto parsed = parse_write_log(log.bytes());
    ASSERT_TRUE(parsed) << parsed.error().message();
    EXPECT_EQ(parsed->header.capacity_sectors, 100u);
    EXPECT_EQ(parsed->trailing_bytes, 0u);
    ASSERT_EQ(parsed->records.size(), 4u);
    EXPECT_EQ(parsed->records[0].type, WriteLogRecordType::Write);
    EXPECT_EQ(parsed->records[0].sector, 3u);
    ASSERT_EQ(parsed->records[0].data.size(), 1024u);
    EXPECT_EQ(parsed->records[0].data[1023], std::byte { 0xab });
    EXPECT_EQ(parsed->records[1].type, WriteLogRecordType::Discard);
    EXPECT_EQ(parsed->records[1].length, 4096u);
    EXPECT_TRUE(parsed->records[1].data.empty());
    EXPECT_EQ(parsed->records[2].type, WriteLogRecordType::WriteZeroes);
    EXPECT_EQ(parsed->records[3].type, WriteLogRecordType::Flush);
    EXPECT_EQ(parsed->records[3].flush_covers, 3u);
    EXPECT_EQ(parsed->records[3].sequence, 3u);
}

TEST(WriteLogFormatTest, CutOffLastRecordLeavesTheIntactPrefix) {
    WriteLogBuilder log(100);
    log.add(WriteLogRecordType::Write, 0, filled(512, 1));
    log.add(WriteLogRecordType::Write, 1, filled(512, 2));
    log.bytes().resize(log.bytes().size() - 100);
    auto parsed = parse_write_log(log.bytes());
    ASSERT_TRUE(parsed) << parsed.error().message();
    EXPECT_EQ(parsed->records.size(), 1u);
    EXPECT_EQ(parsed->trailing_bytes, WRITE_LOG_RECORD_HEADER_SIZE + 512 - 100);
}

TEST(WriteLogFormatTest, DamagedDataIsAnErrorNamingTheOffset) {
    WriteLogBuilder log(100);
    log.add(WriteLogRecordType::Write, 0, filled(512, 1));
    log.bytes()[WRITE_LOG_HEADER_SIZE + WRITE_LOG_RECORD_HEADER_SIZE + 7] ^= std::byte { 1 };
    auto parsed = parse_write_log(log.bytes());
    ASSERT_FALSE(parsed);
    EXPECT_NE(parsed.error().message().find("offset 32: data checksum"), std::string::npos) << parsed.error().message();
}

TEST(WriteLogFormatTest, DamagedRecordHeaderIsAnError) {
    WriteLogBuilder log(100);
    log.add(WriteLogRecordType::Write, 0, filled(512, 1));
    log.bytes()[WRITE_LOG_HEADER_SIZE + 16] ^= std::byte { 1 }; // the sector
    auto parsed = parse_write_log(log.bytes());
    ASSERT_FALSE(parsed);
    EXPECT_NE(parsed.error().message().find("header checksum"), std::string::npos) << parsed.error().message();
}

TEST(WriteLogFormatTest, RangePastTheCapacityIsAnError) {
    WriteLogBuilder log(8);
    log.add(WriteLogRecordType::Discard, 7, {}, 1024);
    auto parsed = parse_write_log(log.bytes());
    ASSERT_FALSE(parsed);
    EXPECT_NE(parsed.error().message().find("run past the 8 sectors"), std::string::npos) << parsed.error().message();
}

TEST(WriteLogFormatTest, FlushCoveringRecordsAfterItselfIsAnError) {
    WriteLogBuilder log(8);
    log.add(WriteLogRecordType::Flush, 0, {}, 0, 2);
    auto parsed = parse_write_log(log.bytes());
    ASSERT_FALSE(parsed);
    EXPECT_NE(parsed.error().message().find("after itself"), std::string::npos) << parsed.error().message();
}

TEST(WriteLogFormatTest, WrongMagicOrVersionIsAnError) {
    WriteLogBuilder log(8);
    auto bytes = log.bytes();
    bytes[0] = std::byte { 'X' };
    EXPECT_FALSE(parse_write_log(bytes));
    auto short_bytes = std::vector<std::byte>(log.bytes().begin(), log.bytes().begin() + 10);
    auto parsed = parse_write_log(short_bytes);
    ASSERT_FALSE(parsed);
    EXPECT_NE(parsed.error().message().find("10 bytes"), std::string::npos) << parsed.error().message();
}

} // namespace
} // namespace kvmm

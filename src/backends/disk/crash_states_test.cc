#include "backends/disk/crash_states.h"

#include "base/testing/temporary_directory.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <vector>

namespace kvmm {
namespace {

constexpr uint64_t CAPACITY_SECTORS = 64;

// A synthetic recording, as a drive with record=PATH would have written it.
class Recording {
public:
    Recording() {
        auto header = encode_write_log_header(WriteLogHeader { CAPACITY_SECTORS });
        m_bytes.assign(header.begin(), header.end());
    }
    uint64_t write(uint64_t sector, std::vector<std::byte> data) {
        data.resize((data.size() + 511) / 512 * 512);
        return add(WriteLogRecordType::Write, sector, data.size(), 0, data);
    }
    uint64_t discard(uint64_t sector, uint64_t sectors) {
        return add(WriteLogRecordType::Discard, sector, sectors * 512, 0, {});
    }
    // A flush submitted when `covers` records had completed.
    uint64_t flush(uint64_t covers) { return add(WriteLogRecordType::Flush, 0, 0, covers, {}); }
    uint64_t flush_all() { return flush(m_sequence); }
    uint64_t record(uint64_t sector, uint64_t number) {
        std::vector<std::byte> payload(100, std::byte { static_cast<uint8_t>(number) });
        return write(sector, encode_crash_record(number, payload));
    }
    uint64_t ack(uint64_t sector, uint64_t number) { return write(sector, encode_crash_ack(number)); }

    ParsedWriteLog parsed() const {
        auto log = parse_write_log(m_bytes);
        EXPECT_TRUE(log) << log.error().message();
        return *log;
    }

private:
    uint64_t add(WriteLogRecordType type, uint64_t sector, uint64_t length, uint64_t covers,
                 std::vector<std::byte> const& data) {
        WriteLogRecord record { m_sequence, type, sector, length, covers, {} };
        auto header = encode_write_log_record(record, data.empty() ? 0 : write_log_crc32(data));
        m_bytes.insert(m_bytes.end(), header.begin(), header.end());
        m_bytes.insert(m_bytes.end(), data.begin(), data.end());
        return m_sequence++;
    }
    std::vector<std::byte> m_bytes;
    uint64_t m_sequence { 0 };
};

class CrashStatesTest : public ::testing::Test {
protected:
    CrashStatesTest() {
        std::ofstream(base) << std::string(CAPACITY_SECTORS * 512, '\0');
        options.work_directory = directory.path();
    }
    CrashCheckReport check(Recording const& recording) {
        auto report = check_crash_states(base, recording.parsed(), options);
        EXPECT_TRUE(report) << report.error().message();
        return report ? *report : CrashCheckReport {};
    }

    testing::TemporaryDirectory directory { "kvmm-crash-test" };
    std::string base = directory / "base.raw";
    CrashCheckOptions options;
};

TEST_F(CrashStatesTest, RecordsFlushedBeforeTheirAcknowledgement_PassEveryState) {
    Recording recording;
    recording.record(8, 1);
    recording.flush_all();
    recording.ack(0, 1);
    recording.record(16, 2);
    recording.write(40, std::vector<std::byte>(4096, std::byte { 7 })); // unrelated, never flushed
    recording.flush_all();
    recording.ack(0, 2);
    recording.record(24, 3); // written, never acknowledged: may be lost
    auto const report = check(recording);
    EXPECT_TRUE(report.failures.empty()) << describe_crash_state(report.failures.front().state) << ": "
                                         << report.failures.front().reason;
    EXPECT_EQ(report.flush_points, 2u);
    EXPECT_EQ(report.records, 8u);
    EXPECT_GE(report.states_checked, 3 * options.samples_per_interval);
}

TEST_F(CrashStatesTest, AcknowledgedWriteLostAfterTheFlush_IsReported) {
    Recording recording;
    recording.record(8, 1);
    recording.flush_all();
    recording.ack(0, 1);
    recording.discard(8, 8); // the acknowledged record is lost afterwards
    recording.flush_all();
    auto const report = check(recording);
    ASSERT_FALSE(report.failures.empty());
    bool at_last_flush = false;
    for (auto const& failure : report.failures) {
        EXPECT_NE(failure.reason.find("first: record 1"), std::string::npos) << failure.reason;
        EXPECT_GE(failure.state.cut, 4u) << describe_crash_state(failure.state);
        at_last_flush = at_last_flush || (failure.state.cut == 5 && failure.state.kind == "flush point");
    }
    EXPECT_TRUE(at_last_flush);
}

TEST_F(CrashStatesTest, FlushSubmittedBeforeTheWriteCompleted_DoesNotMakeItDurable) {
    Recording recording;
    recording.record(8, 1);
    recording.flush(0); // submitted before record 1's write completed: it covers nothing
    recording.ack(0, 1);
    recording.flush_all();
    options.samples_per_interval = 64;
    auto const report = check(recording);
    ASSERT_FALSE(report.failures.empty());
    for (auto const& failure : report.failures) {
        EXPECT_EQ(failure.state.cut, 3u) << describe_crash_state(failure.state);
        EXPECT_EQ(failure.state.durable, 0u);
        EXPECT_TRUE(std::find(failure.state.maybes.begin(), failure.state.maybes.end(), 0u) ==
                    failure.state.maybes.end());
    }
}

TEST_F(CrashStatesTest, AcknowledgementBeforeAnyFlush_IsReportedInSampledStates) {
    Recording recording;
    recording.record(8, 1);
    recording.ack(0, 1);
    recording.write(30, std::vector<std::byte>(512, std::byte { 1 }));
    recording.flush_all();
    options.samples_per_interval = 64;
    auto const report = check(recording);
    ASSERT_FALSE(report.failures.empty());
    for (auto const& failure : report.failures) {
        EXPECT_EQ(failure.state.kind, "sampled");
        EXPECT_TRUE(std::find(failure.state.maybes.begin(), failure.state.maybes.end(), 0u) ==
                    failure.state.maybes.end());
    }
}

TEST_F(CrashStatesTest, ImageCheck_SeesEachStateAndItsFailuresAreReported) {
    Recording recording;
    recording.write(2, std::vector<std::byte>(512, std::byte { 0xaa }));
    recording.flush_all();
    recording.write(3, std::vector<std::byte>(512, std::byte { 0xbb }));
    std::vector<std::pair<uint8_t, uint8_t>> seen; // sectors 2 and 3's first bytes per state
    options.check_image = [&](std::string const& path) -> Expected<void> {
        int const fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
        uint8_t two = 0, three = 0;
        EXPECT_EQ(::pread(fd, &two, 1, 2 * 512), 1);
        EXPECT_EQ(::pread(fd, &three, 1, 3 * 512), 1);
        uint8_t const scribble = 0x55; // a check may change its copy (e.g. a journal replay)
        EXPECT_EQ(::pwrite(fd, &scribble, 1, 3 * 512), 1);
        ::close(fd);
        seen.emplace_back(two, three);
        if (three == 0xbb)
            return Error("sector 3 written");
        return {};
    };
    options.check_records = false;
    auto const report = check(recording);
    ASSERT_EQ(seen.size(), report.states_checked);
    bool without = false, with = false;
    for (auto const& [two, three] : seen) {
        if (two == 0xaa && three == 0)
            without = true;
        if (two == 0xaa && three == 0xbb)
            with = true;
    }
    EXPECT_TRUE(without);
    EXPECT_TRUE(with);
    ASSERT_FALSE(report.failures.empty());
    for (auto const& failure : report.failures) {
        EXPECT_EQ(failure.reason, "sector 3 written");
        EXPECT_EQ(failure.state.maybes, std::vector<uint64_t> { 2 });
    }
}

TEST_F(CrashStatesTest, Plan_IsReproducibleFromTheSeedAndCoversEveryFlushPoint) {
    Recording recording;
    for (uint64_t i = 0; i < 10; ++i) {
        recording.write(i, std::vector<std::byte>(512, std::byte { 1 }));
        // The second write completed while the flush ran: the flush does not cover it.
        recording.flush(recording.write(20 + i, std::vector<std::byte>(512, std::byte { 2 })));
    }
    auto const log = recording.parsed();
    auto const first = plan_crash_states(log, options);
    auto const again = plan_crash_states(log, options);
    ASSERT_EQ(first.size(), again.size());
    for (size_t i = 0; i < first.size(); ++i) {
        EXPECT_EQ(first[i].cut, again[i].cut);
        EXPECT_EQ(first[i].maybes, again[i].maybes);
    }
    size_t flush_points = 0;
    uint64_t previous_cut = 0;
    for (auto const& state : first) {
        EXPECT_GE(state.cut, previous_cut);
        previous_cut = state.cut;
        flush_points += state.kind == "flush point" ? 1 : 0;
        for (auto const index : state.maybes) {
            EXPECT_GE(index, state.durable);
            EXPECT_LT(index, state.cut);
        }
    }
    EXPECT_EQ(flush_points, 10u);
    options.seed = 2;
    auto const other = plan_crash_states(log, options);
    bool differs = other.size() != first.size();
    for (size_t i = 0; !differs && i < first.size(); ++i)
        differs = first[i].cut != other[i].cut || first[i].maybes != other[i].maybes;
    EXPECT_TRUE(differs);
}

TEST(CrashRecordsTest, DamagedOrMissingRecordsAreNamed) {
    std::vector<std::byte> image(16 * 512);
    std::vector<std::byte> const payload(700, std::byte { 3 });
    for (uint64_t number = 1; number <= 3; ++number) {
        auto const record = encode_crash_record(number, payload);
        std::memcpy(image.data() + (number - 1) * 4 * 512, record.data(), record.size());
    }
    EXPECT_TRUE(missing_crash_records(image, 3).empty());
    EXPECT_EQ(missing_crash_records(image, 4), std::vector<uint64_t> { 4 });
    image[4 * 512 + 600] = std::byte { 9 }; // record 2's payload
    EXPECT_EQ(missing_crash_records(image, 3), std::vector<uint64_t> { 2 });
}

TEST_F(CrashStatesTest, BaseSmallerThanTheRecording_IsAnError) {
    std::ofstream(base, std::ios::trunc) << std::string(512, '\0');
    Recording recording;
    auto const report = check_crash_states(base, recording.parsed(), options);
    ASSERT_FALSE(report);
    EXPECT_NE(report.error().message().find("smaller than the recording's 64 sectors"), std::string::npos)
        << report.error().message();
}

} // namespace
} // namespace kvmm

#include "backends/disk/write_recorder.h"

#include "base/file.h"
#include "base/testing/temporary_directory.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <vector>

namespace kvmm {
namespace {

TEST(WriteRecorderTest, AppendsRecordsThatTheParserReadsBack) {
    testing::TemporaryDirectory directory;
    auto const path = directory / "log";
    {
        auto recorder = WriteRecorder::create(path, 64);
        ASSERT_TRUE(recorder) << recorder.error().message();
        std::vector<uint8_t> first(512, 0x11), second(1024, 0x22);
        iovec data[2] = { { first.data(), first.size() }, { second.data(), second.size() } };
        (*recorder)->record_write(4096, data);
        (*recorder)->record_range(WriteLogRecordType::WriteZeroes, 0, 512);
        (*recorder)->record_flush(2);
        EXPECT_EQ((*recorder)->next_sequence(), 3u);
    }
    auto bytes = read_file(path, 1 << 20);
    ASSERT_TRUE(bytes) << bytes.error().message();
    auto parsed = parse_write_log(*bytes);
    ASSERT_TRUE(parsed) << parsed.error().message();
    ASSERT_EQ(parsed->records.size(), 3u);
    EXPECT_EQ(parsed->records[0].sector, 8u);
    ASSERT_EQ(parsed->records[0].data.size(), 1536u);
    EXPECT_EQ(parsed->records[0].data[511], std::byte { 0x11 });
    EXPECT_EQ(parsed->records[0].data[512], std::byte { 0x22 });
    EXPECT_EQ(parsed->records[1].type, WriteLogRecordType::WriteZeroes);
    EXPECT_EQ(parsed->records[2].flush_covers, 2u);
}

TEST(WriteRecorderTest, RefusesToOverwriteAnExistingFile) {
    testing::TemporaryDirectory directory;
    auto const path = directory / "log";
    { ASSERT_TRUE(WriteRecorder::create(path, 8)); }
    auto again = WriteRecorder::create(path, 8);
    ASSERT_FALSE(again);
    EXPECT_NE(again.error().message().find("exists"), std::string::npos) << again.error().message();
    auto bytes = read_file(path, 1 << 20);
    ASSERT_TRUE(bytes);
    EXPECT_EQ(bytes->size(), WRITE_LOG_HEADER_SIZE);
}

TEST(WriteRecorderTest, FailedAppendStopsRecordingAndLaterCallsDoNothing) {
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC), 0);
    UniqueFd read_end(pipe_fds[0]);
    ASSERT_GE(::fcntl(pipe_fds[1], F_SETPIPE_SZ, 4096), 4096);
    auto recorder = WriteRecorder::create_on(UniqueFd(pipe_fds[1]), "pipe", 1 << 20);
    ASSERT_TRUE(recorder) << recorder.error().message();
    std::vector<uint8_t> data(1 << 20, 0x33); // more than the pipe holds: EAGAIN
    iovec vector { data.data(), data.size() };
    (*recorder)->record_write(0, std::span(&vector, 1));
    EXPECT_TRUE((*recorder)->stopped());
    EXPECT_EQ((*recorder)->next_sequence(), 0u);
    (*recorder)->record_flush(0);
    EXPECT_EQ((*recorder)->next_sequence(), 0u);
}

} // namespace
} // namespace kvmm

#include "manager/log_file.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <sstream>

namespace kvmm {
namespace {

namespace fs = std::filesystem;

class LogDirectory : public ::testing::Test {
protected:
    void SetUp() override {
        std::string pattern = ::testing::TempDir() + "kvmm-log-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        m_directory = pattern;
    }
    void TearDown() override {
        std::error_code ignored;
        fs::remove_all(m_directory, ignored);
    }

    fs::path log() const { return m_directory / "vm.log"; }
    fs::path rotated(unsigned number) const { return m_directory / ("vm.log." + std::to_string(number)); }

    static std::string read(fs::path const& path) {
        std::ifstream stream(path);
        std::stringstream contents;
        contents << stream.rdbuf();
        return contents.str();
    }

    fs::path m_directory;
};

std::span<char const> bytes(std::string_view text) { return { text.data(), text.size() }; }

TEST_F(LogDirectory, WritesBelowLimit_AppendToOneFile) {
    auto log_file = MUST(RotatingLog::open(log(), 100, 2));
    ASSERT_TRUE(log_file.write(bytes("hello ")));
    ASSERT_TRUE(log_file.write(bytes("world")));
    EXPECT_EQ(read(log()), "hello world");
    EXPECT_EQ(log_file.size(), 11u);
    EXPECT_FALSE(fs::exists(rotated(1)));
}

TEST_F(LogDirectory, Reopen_AppendsAndCountsExistingSize) {
    {
        auto log_file = MUST(RotatingLog::open(log(), 10, 2));
        ASSERT_TRUE(log_file.write(bytes("12345678")));
    }
    auto log_file = MUST(RotatingLog::open(log(), 10, 2));
    EXPECT_EQ(log_file.size(), 8u);
    ASSERT_TRUE(log_file.write(bytes("abc"))); // 11 > 10: rotates first
    EXPECT_EQ(read(rotated(1)), "12345678");
    EXPECT_EQ(read(log()), "abc");
}

TEST_F(LogDirectory, Rotation_ShiftsFilesAndDropsOldest) {
    auto log_file = MUST(RotatingLog::open(log(), 4, 2));
    for (std::string_view chunk : { "aaaa", "bbbb", "cccc", "dddd" })
        ASSERT_TRUE(log_file.write(bytes(chunk)));
    EXPECT_EQ(read(log()), "dddd");
    EXPECT_EQ(read(rotated(1)), "cccc");
    EXPECT_EQ(read(rotated(2)), "bbbb");
    EXPECT_FALSE(fs::exists(rotated(3)));
}

TEST_F(LogDirectory, WriteLargerThanLimit_IsSplitAcrossFiles) {
    auto log_file = MUST(RotatingLog::open(log(), 4, 3));
    ASSERT_TRUE(log_file.write(bytes("0123456789")));
    EXPECT_EQ(read(rotated(2)), "0123");
    EXPECT_EQ(read(rotated(1)), "4567");
    EXPECT_EQ(read(log()), "89");
}

TEST_F(LogDirectory, KeepZero_TruncatesInstead) {
    auto log_file = MUST(RotatingLog::open(log(), 4, 0));
    ASSERT_TRUE(log_file.write(bytes("aaaa")));
    ASSERT_TRUE(log_file.write(bytes("bb")));
    EXPECT_EQ(read(log()), "bb");
    EXPECT_FALSE(fs::exists(rotated(1)));
}

TEST_F(LogDirectory, ZeroMaximum_IsRejected) { EXPECT_FALSE(RotatingLog::open(log(), 0, 1)); }

TEST_F(LogDirectory, MissingDirectory_IsAnError) { EXPECT_FALSE(RotatingLog::open(m_directory / "absent" / "vm.log")); }

TEST(Scrollback, BelowCapacity_KeepsEverything) {
    Scrollback scrollback(16);
    scrollback.append(bytes("abc"));
    scrollback.append(bytes("def"));
    EXPECT_EQ(scrollback.contents(), "abcdef");
    EXPECT_EQ(scrollback.size(), 6u);
}

TEST(Scrollback, Overflow_KeepsNewestBytes) {
    Scrollback scrollback(8);
    scrollback.append(bytes("012345"));
    scrollback.append(bytes("6789ab")); // wraps around the end of the ring
    EXPECT_EQ(scrollback.contents(), "456789ab");
    scrollback.append(bytes("c"));
    EXPECT_EQ(scrollback.contents(), "56789abc");
}

TEST(Scrollback, AppendLargerThanCapacity_KeepsItsTail) {
    Scrollback scrollback(4);
    scrollback.append(bytes("xy"));
    scrollback.append(bytes("0123456789"));
    EXPECT_EQ(scrollback.contents(), "6789");
}

TEST(Scrollback, ManySmallAppends_MatchLastBytesOfStream) {
    Scrollback scrollback(7);
    std::string stream;
    for (int i = 0; i < 100; ++i) {
        std::string const piece(static_cast<size_t>(i % 5), static_cast<char>('a' + i % 26));
        stream += piece;
        scrollback.append(bytes(piece));
        auto const expected = stream.size() > 7 ? stream.substr(stream.size() - 7) : stream;
        ASSERT_EQ(scrollback.contents(), expected) << "after append " << i;
    }
}

TEST(Scrollback, Clear_EmptiesAndZeroCapacityKeepsNothing) {
    Scrollback scrollback(4);
    scrollback.append(bytes("abc"));
    scrollback.clear();
    EXPECT_EQ(scrollback.contents(), "");
    scrollback.append(bytes("z"));
    EXPECT_EQ(scrollback.contents(), "z");
    Scrollback nothing(0);
    nothing.append(bytes("abc"));
    EXPECT_EQ(nothing.contents(), "");
}

TEST(AlreadyLogged, HistoryOverlappingTheLog_SkipsUpToTheEndOfTheTail) {
    // The log holds "...boot\nlogin: "; kvmm replays "boot\nlogin: root\n" (the last bytes of
    // its output): only "root\n" is new.
    EXPECT_EQ(already_logged("kernel\nboot\nlogin: ", "boot\nlogin: root\n"), 12u);
    // The tail itself is longer than the overlap: the longest prefix of the history it ends with.
    EXPECT_EQ(already_logged("a long log that ends in: boot\n", "boot\nmore\n"), 5u);
    // The last occurrence counts: the log ends where the history has it last.
    EXPECT_EQ(already_logged("tick\n", "tick\ntick\nnew\n"), 10u);
}

TEST(AlreadyLogged, NothingInCommonOrNothingLogged_EverythingIsNew) {
    EXPECT_EQ(already_logged("old output\n", "entirely new\n"), 0u);
    EXPECT_EQ(already_logged("", "new\n"), 0u);
    EXPECT_EQ(already_logged("old\n", ""), 0u);
}

TEST_F(LogDirectory, ReadFileTail_ReturnsTheLastBytesOrTheWholeShortFile) {
    auto const path = m_directory / "log";
    std::ofstream(path) << "0123456789";
    EXPECT_EQ(read_file_tail(path, 4), "6789");
    EXPECT_EQ(read_file_tail(path, 100), "0123456789");
    EXPECT_EQ(read_file_tail(m_directory / "absent", 4), "");
}

} // namespace
} // namespace kvmm

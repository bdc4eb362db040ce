#include "devices/legacy/debug_console.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvmm {
namespace {

class DebugConsoleTest : public ::testing::Test {
protected:
    void write_text(std::string const& text) {
        for (char c : text) {
            uint8_t const byte = static_cast<uint8_t>(c);
            m_console.write(0, std::span<uint8_t const>(&byte, 1));
        }
    }
    std::vector<std::string> m_lines;
    DebugConsole m_console { [this](std::string_view line) { m_lines.emplace_back(line); } };
};

TEST_F(DebugConsoleTest, ReadsAnswerTheReadbackValueFirmwareChecksFor) {
    uint8_t byte = 0;
    m_console.read(0, std::span<uint8_t>(&byte, 1));
    EXPECT_EQ(byte, DEBUG_CONSOLE_READBACK);
}

TEST_F(DebugConsoleTest, BytesBecomeLinesWithoutTheirLineEnds) {
    write_text("SeaBIOS (version 1)\r\nRunning on KVM\n");
    EXPECT_EQ(m_lines, (std::vector<std::string> { "SeaBIOS (version 1)", "Running on KVM" }));
}

TEST_F(DebugConsoleTest, ControlCharactersAreReplacedSoTheHostLogStaysClean) {
    write_text("a\x1b[2Jb\tc\n");
    EXPECT_EQ(m_lines, (std::vector<std::string> { "a?[2Jb\tc" }));
}

TEST_F(DebugConsoleTest, LongLinesAreCutAtTheLimit) {
    write_text(std::string(DebugConsole::MAX_LINE + 10, 'x') + "\n");
    ASSERT_EQ(m_lines.size(), 2u);
    EXPECT_EQ(m_lines[0].size(), DebugConsole::MAX_LINE);
    EXPECT_EQ(m_lines[1].size(), 10u);
}

TEST_F(DebugConsoleTest, WiderWritesAreIgnored) {
    uint8_t const bytes[2] = { 'a', '\n' };
    m_console.write(0, std::span<uint8_t const>(bytes, 2));
    write_text("\n");
    EXPECT_TRUE(m_lines.empty());
}

} // namespace
} // namespace kvmm

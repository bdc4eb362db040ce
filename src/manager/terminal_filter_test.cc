#include "manager/terminal_filter.h"

#include <gtest/gtest.h>

#include <string>

namespace kvmm {
namespace {

std::string filtered(TerminalFilter::Mode mode, std::string_view bytes) {
    TerminalFilter filter(mode);
    std::string out = filter.feed(bytes);
    return out + filter.finish();
}

std::string log(std::string_view bytes) { return filtered(TerminalFilter::Mode::Log, bytes); }
std::string console(std::string_view bytes) { return filtered(TerminalFilter::Mode::Console, bytes); }

TEST(TerminalFilter, TextUtf8NewlinesTabsAndColoursPassUnchanged) {
    std::string const text =
        "boot ok\tdone\n\x1b[1;32m[  OK  ]\x1b[0m Started h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x90\xa7\n";
    EXPECT_EQ(log(text), text);
    EXPECT_EQ(console(text), text);
}

TEST(TerminalFilter, TitleChangeAndOsc52ClipboardWriteAreShownNotObeyed) {
    EXPECT_EQ(log("\x1b]0;owned\x07"), "^[]0;owned^G");
    EXPECT_EQ(console("\x1b]52;c;cm0gLXJmIH4K\x1b\\"), "^[]52;c;cm0gLXJmIH4K^[\\");
    EXPECT_EQ(console("\x1bP+q544e\x1b\\"), "^[P+q544e^[\\") << "DCS";
}

TEST(TerminalFilter, RequestsThatMakeTheTerminalAnswerAreShown) {
    for (std::string_view const request : { "\x1b[6n", "\x1b[c", "\x1b[>c", "\x1b[21t", "\x1b[?1$p", "\x1b[5n" }) {
        std::string const shown = "^[" + std::string(request.substr(1));
        EXPECT_EQ(log(request), shown);
        EXPECT_EQ(console(request), shown);
    }
}

TEST(TerminalFilter, FakePromptByOverwritingTheLineIsVisibleInLogs) {
    EXPECT_EQ(log("rm -rf /srv\rroot@host:~# "), "rm -rf /srv^Mroot@host:~# ");
    EXPECT_EQ(log("\x1b[2K\x1b[1Groot@host:~# "), "^[[2K^[[1Groot@host:~# ");
    EXPECT_EQ(log("line\r\nnext\r\r\n"), "line\r\nnext\r\n") << "serial line ends stay";
}

TEST(TerminalFilter, ConsoleKeepsLineEditingAndFullScreenSequences) {
    std::string const editing = "\r\x1b[K$ ls\x08\x1b[1P\x1b[3D\x1b[2J\x1b[H\x1b[?1049h\x1b[1;24r\x1b[?25l\x1b[?1049l";
    EXPECT_EQ(console(editing), "\r\x1b[K$ ls^H\x1b[1P\x1b[3D\x1b[2J\x1b[H\x1b[?1049h\x1b[1;24r\x1b[?25l\x1b[?1049l");
    EXPECT_EQ(console("\x1b[3J"), "^[[3J") << "the host's scrollback is not the guest's to erase";
    EXPECT_EQ(console("\x1b[?1000h"), "^[[?1000h") << "mouse reporting would outlive the session";
}

TEST(TerminalFilter, ControlCharactersAndC1ControlsAreShownVisibly) {
    EXPECT_EQ(log(std::string("a\x07"
                              "b\x00"
                              "c\x7f",
                              6)),
              "a^Gb^@c^?");
    EXPECT_EQ(log("\xc2\x9b"
                  "6n"),
              "\\x9b6n")
        << "CSI as a UTF-8 C1 control";
    EXPECT_EQ(log("\x9b"
                  "6n"),
              "\\x9b6n")
        << "a raw 8-bit C1 byte";
    EXPECT_EQ(log("\xc0\x80\xff"), "\\xc0\\x80\\xff");
    EXPECT_EQ(log("\xe0\x80\x80"), "\\xe0\\x80\\x80") << "overlong form";
}

TEST(TerminalFilter, SequencesSplitAcrossChunksAreJudgedWhole) {
    TerminalFilter filter(TerminalFilter::Mode::Log);
    std::string out = filter.feed("x\x1b");
    out += filter.feed("[3");
    out += filter.feed("1mred\x1b[");
    out += filter.feed("6n\xe2\x82");
    out += filter.feed("\xac\r");
    out += filter.feed("\n");
    out += filter.finish();
    EXPECT_EQ(out, "x\x1b[31mred^[[6n\xe2\x82\xac\r\n");
}

TEST(TerminalFilter, UnfinishedOrOverlongSequencesEndAsText) {
    EXPECT_EQ(log("\x1b["), "^[[");
    EXPECT_EQ(log("\xe2\x82"), "\\xe2\\x82");
    std::string const long_parameters(TerminalFilter::MAX_SEQUENCE, '1');
    EXPECT_EQ(log("\x1b[" + long_parameters + "m"), "^[[" + long_parameters + "m");
}

TEST(TerminalFilter, ResetSequenceUndoesEveryStateConsoleModeLetsThrough) {
    auto const reset = std::string(TerminalFilter::reset_sequence());
    for (std::string_view const undo :
         { "\x1b[?1049l", "\x1b[0m", "\x1b[r", "\x1b[4l", "\x1b[?1l", "\x1b[?7h", "\x1b[?25h" })
        EXPECT_NE(reset.find(undo), std::string::npos) << undo.substr(1);
}

} // namespace
} // namespace kvmm

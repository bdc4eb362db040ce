#include "base/path.h"

#include <gtest/gtest.h>

#include <string>

namespace kvmm {
namespace {

using namespace std::string_literals;

TEST(CheckPathCharacters, OrdinaryPaths_AreAccepted) {
    for (std::string const& path :
         { "/var/lib/kvmm/disk.img"s, "relative/path with spaces"s, "/tmp/ünïcode-é.img"s, "~user/a,b=c;d"s, ""s }) {
        EXPECT_TRUE(check_path_characters(path, "--disk")) << path;
    }
}

TEST(CheckPathCharacters, EmbeddedNul_IsRefusedAndTheMessageNamesTheFieldAndByte) {
    auto const checked = check_path_characters("/etc/shadow\0.img"s, "drive: field 'path_on_host'");
    ASSERT_FALSE(checked);
    auto const& message = checked.error().message();
    EXPECT_EQ(message.rfind("drive: field 'path_on_host': ", 0), 0u) << message;
    EXPECT_NE(message.find("/etc/shadow\\x00.img"), std::string::npos) << message;
    EXPECT_NE(message.find("0x00 at byte 11"), std::string::npos) << message;
    EXPECT_EQ(message.find('\0'), std::string::npos);
}

TEST(CheckPathCharacters, EveryControlCharacter_IsRefusedAndNoOtherByte) {
    for (int byte = 0; byte < 256; ++byte) {
        std::string const path = "/tmp/a"s + static_cast<char>(byte) + "b";
        bool const control = byte < 0x20 || byte == 0x7f;
        auto const checked = check_path_characters(path, "--kernel");
        EXPECT_EQ(checked.has_value(), !control) << "byte " << byte;
        if (!checked) {
            for (char character : checked.error().message())
                EXPECT_FALSE(is_control_character(character)) << "byte " << byte << " leaked into the message";
        }
    }
}

TEST(EscapeControlCharacters, EscapesControlBytesAndBackslashOnly) {
    EXPECT_EQ(escape_control_characters("a\nb\\c\x7f"), "a\\x0ab\\x5cc\\x7f");
    EXPECT_EQ(escape_control_characters("plain/path"), "plain/path");
}

} // namespace
} // namespace kvmm

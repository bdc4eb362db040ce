#include "manager/protocol.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

TEST(ProtocolTest, ParseRequest_NeedsAnObjectWithAStringVerb) {
    EXPECT_TRUE(parse_request(R"({"verb": "list", "all": true})"));
    EXPECT_FALSE(parse_request("not json"));
    EXPECT_FALSE(parse_request("[1, 2]"));
    EXPECT_FALSE(parse_request(R"({"name": "vm"})"));
    EXPECT_FALSE(parse_request(R"({"verb": 3})"));
}

TEST(ProtocolTest, Fields_ErrorsNameTheFieldAndType) {
    auto request = nlohmann::json::parse(R"({"verb": "x", "name": 5, "all": "yes", "lines": -1})");
    auto name = required_string(request, "name");
    ASSERT_FALSE(name);
    EXPECT_NE(name.error().message().find("\"name\""), std::string::npos);
    EXPECT_FALSE(optional_bool(request, "all"));
    EXPECT_FALSE(optional_unsigned(request, "lines"));
    EXPECT_FALSE(MUST(optional_string(request, "missing")).has_value());
    EXPECT_FALSE(required_string(request, "missing"));
}

TEST(ProtocolTest, EncodeLine_IsOneLineAndSurvivesInvalidUtf8) {
    auto line = encode_line(ok_response({ { "text", std::string("a\nb\xff") } }));
    EXPECT_EQ(line.find('\n'), line.size() - 1);
    auto parsed = nlohmann::json::parse(line);
    EXPECT_TRUE(parsed["ok"].get<bool>());
    EXPECT_EQ(error_response("boom")["error"], "boom");
}

TEST(LineBufferTest, SplitsLinesAcrossAppendsAndBoundsTheirLength) {
    LineBuffer lines(8);
    lines.append("ab");
    EXPECT_FALSE(MUST(lines.next_line()).has_value());
    lines.append("c\nde\n");
    EXPECT_EQ(MUST(lines.next_line()).value(), "abc");
    EXPECT_EQ(MUST(lines.next_line()).value(), "de");
    EXPECT_FALSE(MUST(lines.next_line()).has_value());
    lines.append("0123456789");
    EXPECT_FALSE(lines.next_line());
}

} // namespace
} // namespace kvmm

#include "manager/kvmm_client.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

TEST(ParseHttpReplyTest, CompleteReply_GivesStatusAndBody) {
    auto reply =
        MUST(parse_http_reply("HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\ncontent-type: x\r\n\r\nhello"));
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->status, 400);
    EXPECT_EQ(reply->body, "hello");
}

TEST(ParseHttpReplyTest, IncompleteReply_AsksForMore) {
    EXPECT_FALSE(MUST(parse_http_reply("HTTP/1.1 204 No Content\r\n")).has_value());
    EXPECT_FALSE(MUST(parse_http_reply("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")).has_value());
    auto no_body = MUST(parse_http_reply("HTTP/1.1 204 No Content\r\n\r\n"));
    ASSERT_TRUE(no_body);
    EXPECT_EQ(no_body->status, 204);
}

TEST(ParseHttpReplyTest, Garbage_IsAnError) {
    EXPECT_FALSE(parse_http_reply("SMTP ready\r\n\r\n"));
    EXPECT_FALSE(parse_http_reply("HTTP/1.1 2x0 OK\r\n\r\n"));
    EXPECT_FALSE(parse_http_reply("HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n"));
}

TEST(KvmmClientTest, MissingSocket_IsAnErrorNamingThePath) {
    KvmmClient client("/nonexistent/kvmm-control.sock");
    auto reply = client.describe();
    ASSERT_FALSE(reply);
    EXPECT_NE(reply.error().message().find("/nonexistent/kvmm-control.sock"), std::string::npos);
}

} // namespace
} // namespace kvmm

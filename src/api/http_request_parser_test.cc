#include "api/http_request_parser.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

using Result = HttpRequestParser::Result;

TEST(HttpRequestParser, CompleteRequestInOneFeed_YieldsMethodTargetHeadersAndBody) {
    HttpRequestParser parser;
    ASSERT_EQ(parser.feed("PUT /drives/rootfs?x=1 HTTP/1.1\r\nHost: localhost\r\nCONTENT-length: 4\r\n\r\nabcd"),
              Result::Complete);
    HttpRequest request = parser.take_request();
    EXPECT_EQ(request.method, "PUT");
    EXPECT_EQ(request.target, "/drives/rootfs?x=1");
    EXPECT_EQ(request.path(), "/drives/rootfs");
    EXPECT_EQ(request.header("host"), "localhost");
    EXPECT_EQ(request.header("content-length"), "4");
    EXPECT_EQ(request.body, "abcd");
    EXPECT_TRUE(request.keep_alive);
    EXPECT_FALSE(parser.has_partial_request());
}

TEST(HttpRequestParser, ByteByByteFeeding_CompletesOnlyAtTheLastByte) {
    std::string text = "PATCH /vm HTTP/1.1\r\nContent-Length: 3\r\n\r\n{ }";
    HttpRequestParser parser;
    for (size_t i = 0; i + 1 < text.size(); ++i)
        ASSERT_EQ(parser.feed(text.substr(i, 1)), Result::NeedMore) << "at byte " << i;
    ASSERT_EQ(parser.feed(text.substr(text.size() - 1)), Result::Complete);
    EXPECT_EQ(parser.take_request().body, "{ }");
}

TEST(HttpRequestParser, PipelinedRequests_AreReturnedInOrder) {
    HttpRequestParser parser;
    ASSERT_EQ(parser.feed("GET / HTTP/1.1\r\n\r\nGET /version HTTP/1.1\r\n\r\n"), Result::Complete);
    EXPECT_EQ(parser.take_request().target, "/");
    ASSERT_EQ(parser.feed(""), Result::Complete);
    EXPECT_EQ(parser.take_request().target, "/version");
    EXPECT_EQ(parser.feed(""), Result::NeedMore);
}

TEST(HttpRequestParser, BareLineFeeds_AreTolerated) {
    HttpRequestParser parser;
    ASSERT_EQ(parser.feed("GET / HTTP/1.1\nHost: x\n\n"), Result::Complete);
    EXPECT_EQ(parser.take_request().header("host"), "x");
}

TEST(HttpRequestParser, KeepAlive_FollowsVersionAndConnectionHeader) {
    struct Case {
        char const* text;
        bool keep_alive;
    } cases[] = {
        { "GET / HTTP/1.1\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n", false },
        { "GET / HTTP/1.0\r\n\r\n", false },
        { "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true },
    };
    for (auto const& c : cases) {
        HttpRequestParser parser;
        ASSERT_EQ(parser.feed(c.text), Result::Complete) << c.text;
        EXPECT_EQ(parser.take_request().keep_alive, c.keep_alive) << c.text;
    }
}

void expect_error(std::string const& text, int status, HttpRequestParser::Limits limits = {}) {
    HttpRequestParser parser(limits);
    EXPECT_EQ(parser.feed(text), Result::Error) << text;
    EXPECT_EQ(parser.error_status(), status) << text << ": " << parser.error_message();
    EXPECT_FALSE(parser.error_message().empty());
}

TEST(HttpRequestParser, MalformedRequestLines_Are400) {
    expect_error("GET\r\n\r\n", 400);
    expect_error("GET /\r\n\r\n", 400);
    expect_error("GET  / HTTP/1.1\r\n\r\n", 400);
    expect_error("GET http://host/ HTTP/1.1\r\n\r\n", 400);
    expect_error("G(T / HTTP/1.1\r\n\r\n", 400);
    expect_error("GET / FTP/1.1\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1 extra\r\n\r\n", 400);
}

TEST(HttpRequestParser, OtherHttpVersions_Are505) {
    expect_error("GET / HTTP/2.0\r\n\r\n", 505);
    expect_error("GET / HTTP/1.2\r\n\r\n", 505);
}

TEST(HttpRequestParser, MalformedHeaders_Are400) {
    expect_error("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nName : v\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400);
}

TEST(HttpRequestParser, InvalidOrConflictingContentLength_Is400) {
    expect_error("PUT / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400);
    expect_error("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400);
    expect_error("PUT / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", 400);
    expect_error("PUT / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400);
    expect_error("PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400);
    expect_error("PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", 400);
}

TEST(HttpRequestParser, RepeatedEqualContentLength_IsAccepted) {
    HttpRequestParser parser;
    EXPECT_EQ(parser.feed("PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"), Result::Complete);
}

TEST(HttpRequestParser, ChunkedTransferEncoding_Is501) {
    expect_error("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501);
}

TEST(HttpRequestParser, BodyAboveLimit_Is413BeforeTheBodyArrives) {
    expect_error("PUT / HTTP/1.1\r\nContent-Length: 51201\r\n\r\n", 413);
    HttpRequestParser parser;
    std::string body(51200, 'x');
    EXPECT_EQ(parser.feed("PUT / HTTP/1.1\r\nContent-Length: 51200\r\n\r\n" + body), Result::Complete);
}

TEST(HttpRequestParser, HeaderBlockAboveLimit_Is431EvenWithoutTerminator) {
    std::string long_header = "GET / HTTP/1.1\r\nX-Long: " + std::string(9000, 'a');
    expect_error(long_header, 431);
    expect_error(long_header + "\r\n\r\n", 431);
    HttpRequestParser::Limits small { .max_header_bytes = 64, .max_body_bytes = 10 };
    expect_error("GET / HTTP/1.1\r\nX: " + std::string(60, 'b') + "\r\n\r\n", 431, small);
}

TEST(HttpRequestParser, ExpectContinue_IsReportedOnceUntilTheBodyArrives) {
    HttpRequestParser parser;
    ASSERT_EQ(parser.feed("PUT /vm HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"), Result::NeedMore);
    EXPECT_TRUE(parser.take_continue_pending());
    EXPECT_FALSE(parser.take_continue_pending());
    EXPECT_TRUE(parser.has_partial_request());
    ASSERT_EQ(parser.feed("{}"), Result::Complete);
    EXPECT_EQ(parser.take_request().body, "{}");
    expect_error("PUT / HTTP/1.1\r\nExpect: something-else\r\n\r\n", 417);
}

TEST(HttpRequestParser, AfterError_FurtherInputStaysAnError) {
    HttpRequestParser parser;
    ASSERT_EQ(parser.feed("BAD\r\n\r\n"), Result::Error);
    EXPECT_EQ(parser.feed("GET / HTTP/1.1\r\n\r\n"), Result::Error);
}

TEST(SerializeResponse, JsonBody_HasContentTypeAndLength) {
    std::string text = serialize_response(HttpResponse::json(200, "{\"a\":1}"), true);
    EXPECT_EQ(text, "HTTP/1.1 200 OK\r\nServer: kvmm\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n"
                    "Content-Length: 7\r\n\r\n{\"a\":1}");
}

TEST(SerializeResponse, NoContent_HasNoBodyHeaders) {
    std::string text = serialize_response(HttpResponse::no_content(), false);
    EXPECT_EQ(text, "HTTP/1.1 204 No Content\r\nServer: kvmm\r\nConnection: close\r\n\r\n");
}

TEST(SerializeResponse, Fault_IsFirecrackerErrorBody) {
    HttpResponse response = HttpResponse::fault(400, "bad \"x\"");
    EXPECT_EQ(response.status, 400);
    EXPECT_EQ(response.body, "{\"fault_message\":\"bad \\\"x\\\"\"}");
}

} // namespace
} // namespace kvmm

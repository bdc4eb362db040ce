#include "manager/protocol.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <vector>

namespace kvmm {
namespace {

TEST(ProtocolTest, ParseRequest_NeedsAnObjectWithAStringVerb) {
    EXPECT_TRUE(parse_request(R"({"verb": "list", "all": true})"));
    EXPECT_FALSE(parse_request("not json"));
    EXPECT_FALSE(parse_request("[1, 2]"));
    EXPECT_FALSE(parse_request(R"({"name": "vm"})"));
    EXPECT_FALSE(parse_request(R"({"verb": 3})"));
}

TEST(ProtocolTest, ParseRequest_DuplicateKeyIsRefusedNamingIt) {
    auto request = parse_request(R"({"verb": "list", "verb": "destroy", "name": "vm"})");
    ASSERT_FALSE(request);
    EXPECT_NE(request.error().message().find("duplicate key 'verb'"), std::string::npos) << request.error().message();
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

// A listening Unix socket that never accepts, in a fresh temporary directory.
class SilentListener {
public:
    explicit SilentListener(int backlog) {
        char pattern[] = "/tmp/protocol-test-XXXXXX";
        if (::mkdtemp(pattern) == nullptr)
            std::abort();
        m_directory = pattern;
        m_path = m_directory + "/s.sock";
        auto listener = UnixListener::listen(m_path, { .backlog = backlog, .non_blocking = false });
        if (!listener)
            std::abort();
        m_fd = listener->release(); // the directory goes as a whole
    }
    ~SilentListener() { std::filesystem::remove_all(m_directory); }
    std::string const& path() const { return m_path; }

private:
    std::string m_directory, m_path;
    UniqueFd m_fd;
};

TEST(LineBufferTest, HasPartialLine_WhileALineIsIncomplete) {
    LineBuffer lines;
    EXPECT_FALSE(lines.has_partial_line());
    lines.append("{\"verb\"");
    EXPECT_TRUE(lines.has_partial_line());
    lines.append(": 1}\n");
    EXPECT_TRUE(MUST(lines.next_line()).has_value());
    EXPECT_FALSE(lines.has_partial_line());
}

TEST(ConnectTest, ListenerThatDoesNotAccept_TimesOutInsteadOfWaitingForEver) {
    SilentListener listener(0);
    // Fill the backlog: once it is full a blocking connect would wait for ever.
    std::vector<UniqueFd> queued;
    for (int i = 0; i < 64; ++i) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        sockaddr_un address {};
        address.sun_family = AF_UNIX;
        std::memcpy(address.sun_path, listener.path().data(), listener.path().size());
        if (::connect(fd.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0) {
            ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
            break;
        }
        queued.push_back(std::move(fd));
    }
    auto const start = std::chrono::steady_clock::now();
    auto connected = connect_unix_socket(listener.path(), std::chrono::milliseconds(200));
    auto const elapsed = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(connected);
    EXPECT_EQ(connected.error().error_number(), ETIMEDOUT);
    EXPECT_NE(connected.error().message().find(listener.path()), std::string::npos);
    EXPECT_GE(elapsed, std::chrono::milliseconds(150));
    EXPECT_LT(elapsed, std::chrono::seconds(3));
}

TEST(DaemonClientTest, ServerThatNeverAnswers_CallTimesOut) {
    SilentListener listener(8);
    auto client = MUST(DaemonClient::connect(listener.path(), std::chrono::seconds(1)));
    auto const start = std::chrono::steady_clock::now();
    auto answer = client.call({ { "verb", "list" } }, std::chrono::milliseconds(200));
    auto const elapsed = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(answer);
    EXPECT_EQ(answer.error().error_number(), ETIMEDOUT);
    EXPECT_GE(elapsed, std::chrono::milliseconds(150));
    EXPECT_LT(elapsed, std::chrono::seconds(3));
}

} // namespace
} // namespace kvmm

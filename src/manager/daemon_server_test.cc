// DaemonServer against slow, idle and too many clients, on a daemon without VMs (no KVM, no
// cgroups needed: the kvmm binary is never started).
#include "manager/daemon_server.h"

#include "manager/protocol.h"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

namespace kvmm {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class DaemonServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/daemon-server-test-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        m_directory = pattern;
        m_socket = m_directory + "/kvmmd.sock";
        DaemonOptions options;
        options.state_dir = m_directory + "/state";
        options.kvmm_binary = "/bin/true";
        m_daemon = MUST(Daemon::create(options));
    }

    void TearDown() override {
        m_server.reset();
        m_daemon.reset();
        std::filesystem::remove_all(m_directory);
    }

    void serve(DaemonServerOptions options) { m_server = MUST(DaemonServer::start(m_socket, *m_daemon, options)); }

    UniqueFd connect() { return MUST(connect_unix_socket(m_socket, 2s)); }

    // Waits until the server closes `fd` (recv returns 0 or fails); what it sent before, or
    // nullopt if it still holds the connection after `limit`.
    std::optional<std::string> wait_for_close(int fd, std::chrono::milliseconds limit) {
        std::string received;
        auto const deadline = Clock::now() + limit;
        while (Clock::now() < deadline) {
            pollfd entry { fd, POLLIN, 0 };
            if (::poll(&entry, 1, 20) <= 0)
                continue;
            char buffer[4096];
            ssize_t const got = ::recv(fd, buffer, sizeof(buffer), 0);
            if (got <= 0)
                return received;
            received.append(buffer, static_cast<size_t>(got));
        }
        return std::nullopt;
    }

    std::string m_directory;
    std::string m_socket;
    std::unique_ptr<Daemon> m_daemon;
    std::unique_ptr<DaemonServer> m_server;
};

TEST_F(DaemonServerTest, KeepAliveClient_IsAnsweredRequestAfterRequest) {
    serve({});
    auto client = MUST(DaemonClient::connect(m_socket, 2s));
    for (int i = 0; i < 3; ++i)
        EXPECT_TRUE(client.call({ { "verb", "list" } }, 2s));
}

TEST_F(DaemonServerTest, IdleConnection_IsClosedAfterTheIdleTimeout) {
    DaemonServerOptions options;
    options.idle_timeout = 300ms;
    serve(options);
    auto fd = connect();
    auto const start = Clock::now();
    auto const closed = wait_for_close(fd.get(), 5s);
    auto const elapsed = Clock::now() - start;
    ASSERT_TRUE(closed) << "an idle connection is kept for ever";
    EXPECT_GE(elapsed, 250ms);
}

TEST_F(DaemonServerTest, RequestSentOneByteAtATime_IsCutAtTheRequestDeadline) {
    DaemonServerOptions options;
    options.request_timeout = 500ms;
    options.idle_timeout = 30s;
    serve(options);
    auto fd = connect();
    // Each byte within far less than the deadline: bytes must not restart the clock.
    std::string const request = R"({"verb": "list", "padding": "....................................."})";
    auto const start = Clock::now();
    bool closed = false;
    for (char const byte : request) {
        if (::send(fd.get(), &byte, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        std::this_thread::sleep_for(50ms);
        pollfd entry { fd.get(), POLLIN, 0 };
        if (::poll(&entry, 1, 0) > 0) {
            closed = true;
            break;
        }
    }
    auto const elapsed = Clock::now() - start;
    ASSERT_TRUE(closed) << "a request trickling in byte by byte was served for "
                        << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms";
    EXPECT_LT(elapsed, 2500ms);
    auto const notice = wait_for_close(fd.get(), 2s);
    ASSERT_TRUE(notice);
    EXPECT_NE(notice->find("did not arrive whole"), std::string::npos) << *notice;
}

TEST_F(DaemonServerTest, SixteenSlowClientsAtTheCap_DoNotLockANewClientOut) {
    DaemonServerOptions options;
    options.max_clients = 16;
    options.request_timeout = 10s; // longer than the test: only the fair share can help
    options.idle_timeout = 60s;
    serve(options);
    std::vector<UniqueFd> slow;
    for (int i = 0; i < 16; ++i) {
        slow.push_back(connect());
        ASSERT_EQ(::send(slow.back().get(), "{", 1, MSG_NOSIGNAL), 1);
    }
    std::this_thread::sleep_for(200ms);
    for (int round = 0; round < 3; ++round) {
        auto const start = Clock::now();
        auto client = DaemonClient::connect(m_socket, 2s);
        ASSERT_TRUE(client) << client.error().message();
        auto answer = client->call({ { "verb", "list" } }, 2s);
        EXPECT_TRUE(answer) << "round " << round << ": " << answer.error().message();
        EXPECT_LT(Clock::now() - start, 2s);
        for (auto& fd : slow)
            (void)::send(fd.get(), " ", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
}

TEST_F(DaemonServerTest, ThreeHundredIdleClients_NewClientsAreServedAndTheLongestIdleMakeRoom) {
    serve({}); // the defaults: 256 clients, 60 s idle timeout
    std::vector<UniqueFd> idle;
    for (int i = 0; i < 300; ++i)
        idle.push_back(connect());
    auto const start = Clock::now();
    auto client = DaemonClient::connect(m_socket, 2s);
    ASSERT_TRUE(client) << client.error().message();
    auto answer = client->call({ { "verb", "list" } }, 5s);
    ASSERT_TRUE(answer) << answer.error().message();
    EXPECT_LT(Clock::now() - start, 5s);
    // The oldest connections were closed to make room, with a line that says why; the newest
    // are still served.
    auto const first = wait_for_close(idle.front().get(), 2s);
    ASSERT_TRUE(first) << "the longest-idle connection is still open";
    EXPECT_NE(first->find("makes room"), std::string::npos) << *first;
    auto newest = std::move(idle.back());
    idle.pop_back();
    ASSERT_TRUE(send_all(newest.get(), "{\"verb\": \"list\"}\n"));
    char buffer[256];
    pollfd entry { newest.get(), POLLIN, 0 };
    ASSERT_GT(::poll(&entry, 1, 2000), 0);
    ssize_t const got = ::recv(newest.get(), buffer, sizeof(buffer), 0);
    ASSERT_GT(got, 0);
    EXPECT_NE(std::string(buffer, static_cast<size_t>(got)).find("\"ok\":true"), std::string::npos);
}

} // namespace
} // namespace kvmm

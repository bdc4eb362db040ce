// DaemonServer against slow, idle and too many clients, on a daemon without VMs (no KVM, no
// cgroups needed: the kvmm binary is never started).
#include "manager/daemon_server.h"

#include "manager/protocol.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
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

    // A listening socket at m_socket that is not a DaemonServer.
    UniqueFd listen_at_socket(int backlog) {
        auto listener = UnixListener::listen(m_socket, { .backlog = backlog, .non_blocking = false });
        EXPECT_TRUE(listener) << listener.error().message();
        return listener ? listener->release() : UniqueFd(); // the file stays, as a dead server's would
    }

    // A second daemon on its own state directory, to start a second server with.
    std::unique_ptr<Daemon> other_daemon() {
        DaemonOptions options;
        options.state_dir = m_directory + "/other-state";
        options.kvmm_binary = "/bin/true";
        return MUST(Daemon::create(options));
    }

    // The first line `fd` receives within `limit`, or what arrived before it closed or the time ran out.
    static std::string first_line(int fd, std::chrono::milliseconds limit) {
        std::string received;
        auto const deadline = Clock::now() + limit;
        while (received.find('\n') == std::string::npos && Clock::now() < deadline) {
            pollfd entry { fd, POLLIN, 0 };
            if (::poll(&entry, 1, 20) <= 0)
                continue;
            char buffer[4096];
            ssize_t const got = ::recv(fd, buffer, sizeof(buffer), 0);
            if (got <= 0)
                break;
            received.append(buffer, static_cast<size_t>(got));
        }
        return received.substr(0, received.find('\n'));
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

TEST_F(DaemonServerTest, SecondDaemonOnTheSameStateDirectory_IsRefusedUntilTheFirstEnds) {
    DaemonOptions options;
    options.state_dir = m_directory + "/state";
    options.kvmm_binary = "/bin/true";
    auto second = Daemon::create(options);
    ASSERT_FALSE(second) << "two daemons on one state directory";
    EXPECT_NE(second.error().message().find("another kvmmd holds"), std::string::npos) << second.error().message();
    // The lock goes with the daemon that held it.
    m_daemon.reset();
    auto next = Daemon::create(options);
    EXPECT_TRUE(next) << next.error().message();
}

TEST_F(DaemonServerTest, SocketWhoseServerAnswersWithAnError_CountsAsInUse) {
    // A daemon at its client limit refuses a new connection with an error line and closes.
    auto listener = listen_at_socket(16);
    std::thread refuser([&] {
        UniqueFd connection(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        std::string const refusal = "{\"ok\":false,\"error\":\"kvmmd is running a verb for each of its clients\"}\n";
        (void)::send(connection.get(), refusal.data(), refusal.size(), MSG_NOSIGNAL);
    });
    auto daemon = other_daemon();
    auto started = DaemonServer::start(m_socket, *daemon, {});
    refuser.join();
    ASSERT_FALSE(started) << "a daemon that answered was taken for a stale socket";
    EXPECT_NE(started.error().message().find("in use"), std::string::npos) << started.error().message();
    EXPECT_TRUE(std::filesystem::is_socket(m_socket));
}

TEST_F(DaemonServerTest, SocketWithAFullBacklog_CountsAsInUse) {
    auto listener = listen_at_socket(0);
    std::vector<UniqueFd> queued;
    for (int i = 0; i < 1000; ++i) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        sockaddr_un address {};
        address.sun_family = AF_UNIX;
        std::memcpy(address.sun_path, m_socket.data(), m_socket.size());
        if (::connect(fd.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0) {
            ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
            break;
        }
        queued.push_back(std::move(fd));
    }
    auto daemon = other_daemon();
    auto started = DaemonServer::start(m_socket, *daemon, {});
    ASSERT_FALSE(started) << "a daemon too busy to accept was taken for a stale socket";
    EXPECT_NE(started.error().message().find("in use"), std::string::npos) << started.error().message();
}

TEST_F(DaemonServerTest, StaleSocket_IsReplaced) {
    { auto listener = listen_at_socket(16); } // closed: the file stays, nothing listens
    ASSERT_TRUE(std::filesystem::is_socket(m_socket));
    serve({});
    auto client = MUST(DaemonClient::connect(m_socket, 2s));
    EXPECT_TRUE(client.call({ { "verb", "list" } }, 2s));
}

TEST_F(DaemonServerTest, ClientWhoseRequestIsSent_IsAnsweredNotEvictedForANewClient) {
    DaemonServerOptions options;
    options.max_clients = 1;
    serve(options);
    for (int round = 0; round < 100; ++round) {
        SCOPED_TRACE(round);
        // The request is in the socket before the next client connects: this client is not idle.
        auto sender = connect();
        ASSERT_TRUE(send_all(sender.get(), "{\"verb\": \"list\"}\n"));
        auto newcomer = connect();
        auto const answer = first_line(sender.get(), 2s);
        ASSERT_NE(answer.find("\"ok\":true"), std::string::npos) << answer;
        sender.reset();
        newcomer.reset();
        // The server sees both connections end before the next round.
        std::this_thread::sleep_for(20ms);
    }
}

} // namespace
} // namespace kvmm

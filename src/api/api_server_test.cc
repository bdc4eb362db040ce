#include "api/api_server.h"

#include "api/fake_vmm_controller.h"
#include "api/firecracker_api.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

namespace kvmm {
namespace {

using namespace std::chrono_literals;

UniqueFd connect_to(std::string const& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
        return {};
    return fd;
}

bool send_all(int fd, std::string_view text) {
    while (!text.empty()) {
        ssize_t sent = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
        if (sent <= 0)
            return false;
        text.remove_prefix(static_cast<size_t>(sent));
    }
    return true;
}

// Reads one response (headers plus Content-Length bytes); empty on EOF or after `timeout`.
std::string read_response(int fd, std::chrono::milliseconds timeout = 5000ms) {
    std::string text;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        size_t end = text.find("\r\n\r\n");
        if (end != std::string::npos) {
            size_t length = 0;
            size_t header = text.find("Content-Length: ");
            if (header != std::string::npos && header < end)
                length = std::stoul(text.substr(header + 16));
            if (text.size() >= end + 4 + length)
                return text.substr(0, end + 4 + length);
        }
        pollfd poll_fd { .fd = fd, .events = POLLIN, .revents = 0 };
        if (::poll(&poll_fd, 1, 50) <= 0)
            continue;
        char buffer[4096];
        ssize_t received = ::recv(fd, buffer, sizeof(buffer), 0);
        if (received <= 0)
            return {};
        text.append(buffer, static_cast<size_t>(received));
    }
    return {};
}

// Everything the server sends until it closes the connection (at most 5 s).
std::string read_until_closed(int fd) {
    std::string text;
    auto deadline = std::chrono::steady_clock::now() + 5000ms;
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd poll_fd { .fd = fd, .events = POLLIN, .revents = 0 };
        if (::poll(&poll_fd, 1, 50) <= 0)
            continue;
        char buffer[4096];
        ssize_t received = ::recv(fd, buffer, sizeof(buffer), 0);
        if (received <= 0)
            return text;
        text.append(buffer, static_cast<size_t>(received));
    }
    return "(not closed) " + text;
}

// True when the server closes `fd` within `timeout`.
bool closed_by_peer(int fd, std::chrono::milliseconds timeout) {
    pollfd poll_fd { .fd = fd, .events = POLLIN, .revents = 0 };
    if (::poll(&poll_fd, 1, static_cast<int>(timeout.count())) <= 0)
        return false;
    char byte;
    return ::recv(fd, &byte, 1, MSG_DONTWAIT) == 0;
}

class ApiServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        m_path = ::testing::TempDir() + "kvmm-api-" + std::to_string(::getpid()) + ".sock";
        ::unlink(m_path.c_str());
    }
    void TearDown() override {
        server.reset();
        ::unlink(m_path.c_str());
    }
    void start(ApiServerOptions options = {}) {
        auto started = ApiServer::start(m_path, api, options);
        ASSERT_TRUE(started) << started.error().message();
        server = std::move(started.value());
    }
    std::string get_root(int fd) {
        if (!send_all(fd, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"))
            return {};
        return read_response(fd);
    }

    std::string m_path;
    FakeVmmController controller;
    FirecrackerApi api { controller, ApiIdentity { "vm", "test" } };
    std::unique_ptr<ApiServer> server;
};

TEST_F(ApiServerTest, Start_SocketIsOwnerOnlyAndAnswersImmediately) {
    start();
    struct stat status {};
    ASSERT_EQ(::stat(m_path.c_str(), &status), 0);
    EXPECT_TRUE(S_ISSOCK(status.st_mode));
    EXPECT_EQ(status.st_mode & 0777, 0600u);
    UniqueFd client = connect_to(m_path);
    ASSERT_TRUE(client.is_valid());
    std::string response = get_root(client.get());
    EXPECT_EQ(response.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << response;
    EXPECT_NE(response.find("\"state\":\"Not started\""), std::string::npos) << response;
    EXPECT_NE(response.find("Server: kvmm\r\n"), std::string::npos);
}

TEST_F(ApiServerTest, Stop_UnlinksTheSocket) {
    start();
    server->stop();
    struct stat status {};
    EXPECT_NE(::stat(m_path.c_str(), &status), 0);
    server->stop(); // idempotent
}

TEST_F(ApiServerTest, StaleSocket_IsReplacedButLiveSocketAndOtherFilesAreNot) {
    {
        // A bound socket whose owner never listens: the file a crashed process leaves.
        UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM, 0));
        sockaddr_un address {};
        address.sun_family = AF_UNIX;
        std::strncpy(address.sun_path, m_path.c_str(), sizeof(address.sun_path) - 1);
        ASSERT_EQ(::bind(stale.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    }
    start();
    auto second = ApiServer::start(m_path, api);
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().message().find("in use"), std::string::npos) << second.error().message();
    // The refused second server must not have removed the live socket.
    UniqueFd client = connect_to(m_path);
    ASSERT_TRUE(client.is_valid());
    EXPECT_FALSE(get_root(client.get()).empty());
    server.reset();

    std::string file = m_path + ".regular";
    { UniqueFd created(::open(file.c_str(), O_CREAT | O_WRONLY, 0600)); }
    auto refused = ApiServer::start(file, api);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("not a socket"), std::string::npos);
    struct stat status {};
    EXPECT_EQ(::stat(file.c_str(), &status), 0);
    ::unlink(file.c_str());
}

TEST_F(ApiServerTest, ConcurrentClients_AreAllServed) {
    start();
    std::atomic<int> successes { 0 };
    std::vector<std::thread> clients;
    for (int i = 0; i < 8; ++i) {
        clients.emplace_back([&] {
            UniqueFd client = connect_to(m_path);
            for (int j = 0; j < 10; ++j) {
                if (get_root(client.get()).rfind("HTTP/1.1 200", 0) == 0)
                    ++successes;
            }
        });
    }
    for (auto& thread : clients)
        thread.join();
    EXPECT_EQ(successes.load(), 80);
}

TEST_F(ApiServerTest, SlowClient_IsDroppedWhileAnotherIsServed) {
    start({ .max_connections = 16, .request_timeout = 200ms, .limits = {} });
    UniqueFd slow = connect_to(m_path);
    ASSERT_TRUE(send_all(slow.get(), "PUT /machine-config HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"vcpu"));
    UniqueFd fast = connect_to(m_path);
    auto begin = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i)
        EXPECT_EQ(get_root(fast.get()).rfind("HTTP/1.1 200", 0), 0u);
    EXPECT_LT(std::chrono::steady_clock::now() - begin, 200ms) << "the fast client waited for the slow one";
    EXPECT_TRUE(closed_by_peer(slow.get(), 2000ms));
    // The fast client's keep-alive connection, idle between requests, is kept.
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(get_root(fast.get()).rfind("HTTP/1.1 200", 0), 0u);
}

TEST_F(ApiServerTest, ClientDisconnectingMidBody_HarmsNothing) {
    start();
    {
        UniqueFd quitter = connect_to(m_path);
        ASSERT_TRUE(
            send_all(quitter.get(), "PUT /machine-config HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"vcpu_count\""));
    }
    UniqueFd client = connect_to(m_path);
    EXPECT_EQ(get_root(client.get()).rfind("HTTP/1.1 200", 0), 0u);
    EXPECT_EQ(api.config().instance.vm.vcpu_count, 1u);
}

TEST_F(ApiServerTest, ConnectionsAboveTheCap_GetServiceUnavailable) {
    start({ .max_connections = 2, .request_timeout = 5000ms, .limits = {} });
    UniqueFd first = connect_to(m_path), second = connect_to(m_path);
    EXPECT_FALSE(get_root(first.get()).empty());
    EXPECT_FALSE(get_root(second.get()).empty());
    UniqueFd third = connect_to(m_path);
    std::string refused = read_response(third.get());
    EXPECT_EQ(refused.rfind("HTTP/1.1 503", 0), 0u) << refused;
    first.reset();
    // Once a slot frees up, a new client is served.
    std::string response;
    for (int attempt = 0; attempt < 100 && response.rfind("HTTP/1.1 200", 0) != 0; ++attempt) {
        if (attempt > 0) // the server notices the hang-up on its next loop turn
            std::this_thread::sleep_for(20ms);
        UniqueFd fourth = connect_to(m_path);
        response = get_root(fourth.get());
    }
    EXPECT_EQ(response.rfind("HTTP/1.1 200", 0), 0u) << response;
}

TEST_F(ApiServerTest, ExpectContinue_GetsInterimResponseThenFinalOne) {
    start();
    UniqueFd client = connect_to(m_path);
    std::string body = R"({"vcpu_count": 2, "mem_size_mib": 256})";
    ASSERT_TRUE(send_all(client.get(), "PUT /machine-config HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: " +
                                           std::to_string(body.size()) + "\r\n\r\n"));
    EXPECT_EQ(read_response(client.get()).rfind("HTTP/1.1 100 Continue", 0), 0u);
    ASSERT_TRUE(send_all(client.get(), body));
    EXPECT_EQ(read_response(client.get()).rfind("HTTP/1.1 204", 0), 0u);
    EXPECT_EQ(api.config().instance.vm.vcpu_count, 2u);
}

TEST_F(ApiServerTest, MalformedRequestsAndOversizedBodies_AreAnsweredThenClosed) {
    start();
    UniqueFd client = connect_to(m_path);
    ASSERT_TRUE(send_all(client.get(), "PUT /machine-config HTTP/1.1\r\nContent-Length: 60000\r\n\r\n"));
    std::string response = read_response(client.get());
    EXPECT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response;
    EXPECT_TRUE(closed_by_peer(client.get(), 2000ms));

    // A body longer than its Content-Length: the excess is a malformed next request.
    UniqueFd mismatch = connect_to(m_path);
    ASSERT_TRUE(
        send_all(mismatch.get(), "PATCH /vm HTTP/1.1\r\nContent-Length: 2\r\n\r\n{\"state\": \"Paused\"}\r\n\r\n"));
    // Two answers: '{"' is no JSON document, and the rest is no request line; then the server closes.
    std::string all = read_until_closed(mismatch.get());
    EXPECT_EQ(all.rfind("HTTP/1.1 400", 0), 0u) << all;
    EXPECT_NE(all.find("HTTP/1.1 400", 1), std::string::npos) << all;
    EXPECT_NE(all.find("malformed JSON"), std::string::npos) << all;

    UniqueFd after = connect_to(m_path);
    EXPECT_EQ(get_root(after.get()).rfind("HTTP/1.1 200", 0), 0u);
}

TEST_F(ApiServerTest, ConnectionClose_IsHonoured) {
    start();
    UniqueFd client = connect_to(m_path);
    ASSERT_TRUE(send_all(client.get(), "GET /version HTTP/1.1\r\nConnection: close\r\n\r\n"));
    std::string response = read_response(client.get());
    EXPECT_NE(response.find("Connection: close\r\n"), std::string::npos) << response;
    EXPECT_TRUE(closed_by_peer(client.get(), 2000ms));
}

} // namespace
} // namespace kvmm

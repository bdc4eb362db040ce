#include "api/api_server.h"

#include "api/fake_vmm_controller.h"
#include "api/firecracker_api.h"

#include "base/loop_timer.h"
#include "base/testing/sanitizers.h"
#include "base/testing/scoped_umask.h"
#include "base/thread_annotations.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

namespace kvmm {
namespace {

using namespace std::chrono_literals;

UniqueFd connect_to(std::string const& path) {
    auto connected = connect_unix_socket(path);
    return connected ? std::move(*connected) : UniqueFd();
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
    kvmm::testing::ScopedUmask const open_umask(0); // the mode must not depend on the umask
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

TEST_F(ApiServerTest, AttachedTimer_RunsOnTheServerThreadUntilStopDetachesIt) {
    std::optional<LoopTimer> timer;
    std::atomic<int> expiries { 0 };
    std::atomic<bool> on_other_thread { true };
    std::thread::id const test_thread = std::this_thread::get_id();
    bool detached = false;
    ApiServerOptions options;
    options.attach_to_loop = [&](EventLoop& loop) -> Expected<void> {
        timer.emplace(TRY(LoopTimer::create(loop, [&] {
            on_other_thread = on_other_thread && std::this_thread::get_id() != test_thread;
            ++expiries;
        })));
        return timer->arm_periodic(5ms);
    };
    options.detach_from_loop = [&] {
        detached = true;
        timer.reset();
    };
    start(std::move(options));
    auto const deadline = std::chrono::steady_clock::now() + 5s;
    while (expiries < 3 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(5ms);
    EXPECT_GE(expiries, 3);
    EXPECT_TRUE(on_other_thread);
    UniqueFd client = connect_to(m_path); // requests are served between expiries
    EXPECT_EQ(get_root(client.get()).rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
    server->stop();
    EXPECT_TRUE(detached);
    EXPECT_FALSE(timer.has_value());
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
    // The deadline leaves a loaded machine ample time for the fast client's five round trips.
    start({ .max_connections = 16, .request_deadline = 1s });
    UniqueFd slow = connect_to(m_path);
    ASSERT_TRUE(send_all(slow.get(), "PUT /machine-config HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"vcpu"));
    UniqueFd fast = connect_to(m_path);
    auto begin = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i)
        EXPECT_EQ(get_root(fast.get()).rfind("HTTP/1.1 200", 0), 0u);
    EXPECT_LT(std::chrono::steady_clock::now() - begin, 1s) << "the fast client waited for the slow one";
    std::string const closing = read_until_closed(slow.get());
    EXPECT_EQ(closing.rfind("HTTP/1.1 408", 0), 0u) << closing;
    // The fast client's keep-alive connection, idle between requests for longer than the
    // request deadline, is kept.
    std::this_thread::sleep_for(1200ms);
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

TEST_F(ApiServerTest, ConnectionsAboveTheCapWithEveryRequestInProgress_GetServiceUnavailable) {
    start({ .max_connections = 2 });
    UniqueFd first = connect_to(m_path), second = connect_to(m_path);
    EXPECT_FALSE(get_root(first.get()).empty());
    EXPECT_FALSE(get_root(second.get()).empty());
    // Both start a request and leave it unfinished: no slot is idle.
    ASSERT_TRUE(send_all(first.get(), "GET / HTTP/1.1\r\n"));
    ASSERT_TRUE(send_all(second.get(), "GET / HTTP/1.1\r\n"));
    std::this_thread::sleep_for(20ms); // let the server read them
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
    // The unfinished request on the other connection is still served when it completes.
    ASSERT_TRUE(send_all(second.get(), "\r\n"));
    EXPECT_EQ(read_response(second.get()).rfind("HTTP/1.1 200", 0), 0u);
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

// The API's liveness bound for a new client while others misbehave (the issue's 100 ms), with
// room for a loaded machine; what was measured is printed.
constexpr auto ANSWER_BOUND = 250ms;

using SteadyClock = std::chrono::steady_clock;

std::chrono::milliseconds elapsed_since(SteadyClock::time_point begin) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - begin);
}

// Clients that send one byte of a request every `interval` until stopped, as an attacker
// trying to keep every slot would; a byte to a closed connection is ignored.
class TricklingClients {
public:
    TricklingClients(std::string const& path, size_t count, std::chrono::milliseconds interval) {
        for (size_t i = 0; i < count; ++i)
            m_clients.push_back(connect_to(path));
        m_thread = std::thread([this, interval] {
            std::string const request = "PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nContent-Length: 30\r\n\r\n"
                                        "{\"vcpu_count\": 2, \"smt\": false}";
            for (size_t offset = 0; !m_stop && offset < request.size(); ++offset) {
                for (auto const& client : m_clients)
                    [[maybe_unused]] auto sent = ::send(client.get(), &request[offset], 1, MSG_NOSIGNAL);
                std::this_thread::sleep_for(interval);
            }
        });
    }
    ~TricklingClients() {
        m_stop = true;
        m_thread.join();
    }
    TricklingClients(TricklingClients const&) = delete;
    TricklingClients& operator=(TricklingClients const&) = delete;
    std::vector<UniqueFd> const& clients() const { return m_clients; }

private:
    std::vector<UniqueFd> m_clients;
    std::atomic<bool> m_stop { false };
    std::thread m_thread;
};

TEST_F(ApiServerTest, SlowByteClients_LoseTheirSlotsAtTheRequestDeadline) {
    start({ .max_connections = 16, .request_deadline = 300ms });
    auto const attack_start = SteadyClock::now();
    TricklingClients slow(m_path, 16, 30ms);
    std::this_thread::sleep_for(100ms); // every slow client has a request in progress

    // Every slot is busy with a request: a new client is told so at once, not left waiting.
    auto begin = SteadyClock::now();
    UniqueFd refused = connect_to(m_path);
    std::string answer = read_response(refused.get(), 2000ms);
    auto const refused_after = elapsed_since(begin);
    EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
    EXPECT_LT(refused_after, ANSWER_BOUND);

    // Each byte no longer extends the deadline: the slow clients get 408 and are closed while
    // they are still trickling (their request would take 3 s at this rate).
    for (auto const& client : slow.clients()) {
        std::string const closing = read_until_closed(client.get());
        EXPECT_EQ(closing.rfind("HTTP/1.1 408", 0), 0u) << closing;
    }
    auto const dropped_after = elapsed_since(attack_start);
    EXPECT_LT(dropped_after, 100ms + 300ms + 1000ms);

    begin = SteadyClock::now();
    UniqueFd client = connect_to(m_path);
    answer = get_root(client.get());
    auto const served_after = elapsed_since(begin);
    EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
    EXPECT_LT(served_after, ANSWER_BOUND);
    std::printf("16 slow-byte clients: a new client was refused (503) after %lld ms; the slow clients were "
                "closed %lld ms into the attack; then a new client was served after %lld ms\n",
                static_cast<long long>(refused_after.count()), static_cast<long long>(dropped_after.count()),
                static_cast<long long>(served_after.count()));
}

TEST_F(ApiServerTest, IdleKeepAliveClients_GiveTheLongestIdleSlotToANewClient) {
    start({ .max_connections = 16 }); // the production timeouts: nothing expires during the test
    std::vector<UniqueFd> idle;
    for (int i = 0; i < 12; ++i) { // served, then kept alive and silent, oldest first
        idle.push_back(connect_to(m_path));
        ASSERT_EQ(get_root(idle.back().get()).rfind("HTTP/1.1 200", 0), 0u);
    }
    for (int i = 0; i < 4; ++i) // connected and never sent a byte
        idle.push_back(connect_to(m_path));
    std::this_thread::sleep_for(20ms);

    std::vector<UniqueFd> newcomers; // they stay, so each one needs a slot of its own
    for (int i = 0; i < 3; ++i) {
        auto const begin = SteadyClock::now();
        newcomers.push_back(connect_to(m_path));
        std::string const answer = get_root(newcomers.back().get());
        auto const waited = elapsed_since(begin);
        EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
        EXPECT_LT(waited, ANSWER_BOUND);
        std::printf("16 idle keep-alive clients: new client %d served after %lld ms\n", i,
                    static_cast<long long>(waited.count()));
        // The connection idle the longest made room, not another one.
        EXPECT_TRUE(closed_by_peer(idle[static_cast<size_t>(i)].get(), 1000ms)) << i;
    }
    // The others still have their connections.
    EXPECT_EQ(get_root(idle[3].get()).rfind("HTTP/1.1 200", 0), 0u);
    EXPECT_EQ(get_root(idle[15].get()).rfind("HTTP/1.1 200", 0), 0u);
}

// Clients that each send a whole request one byte at a time, finishing inside the request
// deadline, and send the first byte of the next request with the last byte of the previous
// one: their slots are never idle and no request ever runs past its deadline.
class BackToBackTricklingClients {
public:
    BackToBackTricklingClients(std::string const& path, size_t count, std::chrono::milliseconds interval) {
        for (size_t i = 0; i < count; ++i)
            m_clients.push_back(connect_to(path));
        m_thread = std::thread([this, interval] {
            std::string_view const request = "GET / HTTP/1.1\r\n\r\n";
            size_t offset = 0;
            while (!m_stop) {
                std::string bytes(1, request[offset]);
                offset = (offset + 1) % request.size();
                if (offset == 0) { // the request is complete: the next one starts at once
                    bytes += request[0];
                    offset = 1;
                }
                for (auto const& client : m_clients) // a byte to a closed connection is ignored
                    [[maybe_unused]] auto sent = ::send(client.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
                std::this_thread::sleep_for(interval);
            }
        });
    }
    ~BackToBackTricklingClients() {
        m_stop = true;
        m_thread.join();
    }
    BackToBackTricklingClients(BackToBackTricklingClients const&) = delete;
    BackToBackTricklingClients& operator=(BackToBackTricklingClients const&) = delete;
    std::vector<UniqueFd> const& clients() const { return m_clients; }

private:
    std::vector<UniqueFd> m_clients;
    std::atomic<bool> m_stop { false };
    std::thread m_thread;
};

// Everything already received on `fd`, without waiting, and whether the peer has closed it.
std::pair<std::string, bool> drain(int fd) {
    std::string text;
    char buffer[4096];
    while (true) {
        ssize_t received = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
        if (received == 0)
            return { text, true };
        if (received < 0)
            return { text, errno != EAGAIN && errno != EWOULDBLOCK };
        text.append(buffer, static_cast<size_t>(received));
    }
}

TEST_F(ApiServerTest, BackToBackTricklingClients_GiveTheOldestRequestsSlotToANewClient) {
    start({ .max_connections = 16, .request_deadline = 5000ms, .slow_request_grace = 100ms });
    // 18 bytes at one per 45 ms: each request takes about 770 ms, well inside its deadline even
    // when a loaded machine delays the sender, so no slow client is closed for its deadline.
    BackToBackTricklingClients slow(m_path, 16, 45ms);
    std::this_thread::sleep_for(300ms); // every slot has a request in progress, past the grace

    // A request that started longer ago than the grace gives its slot to the new client; a
    // request younger than that is not cut off, so an attempt that meets only young requests
    // is refused and tried again.
    auto const begin = SteadyClock::now();
    std::string answer;
    int refusals = 0;
    std::vector<UniqueFd> newcomers;
    while (elapsed_since(begin) < 3000ms) {
        newcomers.push_back(connect_to(m_path));
        answer = get_root(newcomers.back().get());
        if (answer.rfind("HTTP/1.1 200", 0) == 0)
            break;
        ++refusals;
        std::this_thread::sleep_for(20ms);
    }
    auto const served_after = elapsed_since(begin);
    EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
    EXPECT_LT(served_after, 1000ms); // within one request of the slow clients, refusals included

    // Exactly one slow client lost its slot, and was told why before the close.
    int closed = 0;
    for (auto const& client : slow.clients()) {
        auto const [text, was_closed] = drain(client.get());
        if (!was_closed)
            continue;
        ++closed;
        EXPECT_NE(text.find("HTTP/1.1 408"), std::string::npos) << text;
    }
    EXPECT_EQ(closed, 1);
    std::printf("16 back-to-back trickling clients: a new client was served after %lld ms (%d refusals)\n",
                static_cast<long long>(served_after.count()), refusals);
}

// Passes requests to the API, except GET /hold, which keeps the server thread in the handler
// until the test releases it: while it is held, the test can queue work for the server.
class HoldingHandler : public ApiHandler {
public:
    explicit HoldingHandler(ApiHandler& inner) : m_inner(inner) {}

    HttpResponse handle(HttpRequest const& request) override {
        if (request.path() != "/hold")
            return m_inner.handle(request);
        MutexLock lock(m_mutex);
        int const hold = ++m_holds;
        m_changed.notify_all();
        lock.wait_for(m_changed, 5s, [&]() REQUIRES(m_mutex) { return m_released >= hold; });
        return HttpResponse::no_content();
    }
    // True once the server thread is in its `count`th hold (at most 5 s).
    bool wait_for_hold(int count) {
        MutexLock lock(m_mutex);
        return lock.wait_for(m_changed, 5s, [&]() REQUIRES(m_mutex) { return m_holds >= count; });
    }
    void release() {
        MutexLock lock(m_mutex);
        ++m_released;
        m_changed.notify_all();
    }

private:
    ApiHandler& m_inner;
    Mutex m_mutex;
    std::condition_variable m_changed;
    int m_holds { 0 };
    int m_released { 0 };
};

bool has_data(int fd) {
    pollfd poll_fd { .fd = fd, .events = POLLIN, .revents = 0 };
    return ::poll(&poll_fd, 1, 0) == 1;
}

TEST_F(ApiServerTest, ConnectionFloodAtTheCap_IsAcceptedInBoundedBatchesBetweenOtherClients) {
    HoldingHandler holding(api);
    auto started = ApiServer::start(m_path, holding, { .max_connections = 3 });
    ASSERT_TRUE(started) << started.error().message();
    server = std::move(started.value());
    // Two slots hold young requests in progress (not to be cut off); the third serves a request
    // that holds the server thread, then closes.
    UniqueFd holder = connect_to(m_path), waiting = connect_to(m_path), other = connect_to(m_path);
    ASSERT_TRUE(send_all(waiting.get(), "GET /hold HTTP/1.1\r\n"));
    ASSERT_TRUE(send_all(other.get(), "GET / HTTP/1.1\r\n"));
    std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(send_all(holder.get(), "GET /hold HTTP/1.1\r\nConnection: close\r\n\r\n"));
    ASSERT_TRUE(holding.wait_for_hold(1));

    // Meanwhile a flood of clients queues up in the listen backlog, then `waiting` completes its
    // request: when the server thread is released it finds the listener and `waiting` ready.
    constexpr int FLOOD = 40;
    std::vector<UniqueFd> flood;
    for (int i = 0; i < FLOOD; ++i) {
        flood.push_back(connect_to(m_path));
        ASSERT_TRUE(flood.back().is_valid());
        ASSERT_TRUE(send_all(flood.back().get(), "GET / HTTP/1.1\r\n\r\n"));
    }
    ASSERT_TRUE(send_all(waiting.get(), "\r\n"));
    holding.release();

    // `waiting` is served after at most one batch of the flood, not after all of it.
    ASSERT_TRUE(holding.wait_for_hold(2));
    int const answered_first = static_cast<int>(
        std::count_if(flood.begin(), flood.end(), [](UniqueFd const& client) { return has_data(client.get()); }));
    holding.release();
    EXPECT_LE(answered_first, ApiServer::ACCEPTS_PER_WAKEUP);
    std::printf("%d clients flooding a full server: %d answered before a served client's request\n", FLOOD,
                answered_first);

    // And the rest of the flood is answered too: the listener brings the thread back.
    EXPECT_EQ(read_response(holder.get()).rfind("HTTP/1.1 204", 0), 0u);
    EXPECT_EQ(read_response(waiting.get()).rfind("HTTP/1.1 204", 0), 0u);
    for (auto const& client : flood)
        EXPECT_FALSE(read_response(client.get(), 2000ms).empty());
}

TEST_F(ApiServerTest, RequestPastItsDeadline_Gets408AndIsClosedEvenWhileBytesKeepComing) {
    start({ .max_connections = 16, .request_deadline = 200ms });
    UniqueFd client = connect_to(m_path);
    std::this_thread::sleep_for(100ms); // the deadline starts at the first byte, not at connect
    auto const begin = SteadyClock::now();
    std::atomic<bool> stop { false };
    std::thread trickle([&] {
        std::string const headers = "GET / HTTP/1.1\r\nHost: localhost\r\nX-Padding: ";
        for (size_t offset = 0; !stop; ++offset) {
            char const byte = offset < headers.size() ? headers[offset] : 'x';
            if (::send(client.get(), &byte, 1, MSG_NOSIGNAL) != 1)
                return;
            std::this_thread::sleep_for(20ms);
        }
    });
    std::string const answer = read_until_closed(client.get());
    auto const closed_after = elapsed_since(begin);
    stop = true;
    trickle.join();
    EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
    EXPECT_NE(answer.find("Connection: close\r\n"), std::string::npos) << answer;
    EXPECT_GE(closed_after, 190ms);
    EXPECT_LT(closed_after, 200ms + 1000ms);
}

TEST_F(ApiServerTest, IdleConnections_AreClosedSilentlyAfterTheIdleTimeout) {
    start({ .max_connections = 16, .request_deadline = 5000ms, .idle_timeout = 200ms });
    UniqueFd served = connect_to(m_path);
    ASSERT_EQ(get_root(served.get()).rfind("HTTP/1.1 200", 0), 0u);
    UniqueFd silent = connect_to(m_path);
    auto const begin = SteadyClock::now();
    EXPECT_EQ(read_until_closed(served.get()), "");
    EXPECT_EQ(read_until_closed(silent.get()), "");
    auto const closed_after = elapsed_since(begin);
    EXPECT_GE(closed_after, 150ms);
    EXPECT_LT(closed_after, 200ms + 1000ms);
}

TEST_F(ApiServerTest, PathWithNulOverTheSocket_Is400NamingTheField) {
    start();
    UniqueFd client = connect_to(m_path);
    std::string const body =
        R"({"drive_id": "rootfs", "path_on_host": "/etc/shadow\u0000.img", "is_root_device": true})";
    ASSERT_TRUE(send_all(client.get(), "PUT /drives/rootfs HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) +
                                           "\r\n\r\n" + body));
    std::string const response = read_response(client.get());
    EXPECT_EQ(response.rfind("HTTP/1.1 400", 0), 0u) << response;
    EXPECT_NE(response.find("path_on_host"), std::string::npos) << response;
    EXPECT_TRUE(api.config().instance.vm.disks.empty());
}

// Sends spdlog's default logger into a string while it lives; read it only after the threads
// that log have stopped.
class CapturedLog {
public:
    CapturedLog() : m_previous(spdlog::default_logger()) {
        auto logger =
            std::make_shared<spdlog::logger>("captured", std::make_shared<spdlog::sinks::ostream_sink_mt>(m_text));
        logger->set_level(spdlog::level::trace);
        spdlog::set_default_logger(logger);
    }
    ~CapturedLog() { spdlog::set_default_logger(m_previous); }
    CapturedLog(CapturedLog const&) = delete;
    CapturedLog& operator=(CapturedLog const&) = delete;
    std::string text() const { return m_text.str(); }

private:
    std::ostringstream m_text;
    std::shared_ptr<spdlog::logger> m_previous;
};

// Lowers RLIMIT_NOFILE's soft limit and fills every descriptor below it, so that the next
// accept() fails with EMFILE; the destructor gives everything back.
class ExhaustedDescriptors {
public:
    explicit ExhaustedDescriptors(rlim_t soft_limit) {
        ::getrlimit(RLIMIT_NOFILE, &m_saved);
        rlimit lowered { soft_limit, m_saved.rlim_max };
        m_lowered = ::setrlimit(RLIMIT_NOFILE, &lowered) == 0;
        while (m_lowered) {
            UniqueFd fd(::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0));
            if (!fd.is_valid()) {
                m_exhausted = errno == EMFILE;
                break;
            }
            m_fillers.push_back(std::move(fd));
        }
    }
    ~ExhaustedDescriptors() { release(); }
    ExhaustedDescriptors(ExhaustedDescriptors const&) = delete;
    ExhaustedDescriptors& operator=(ExhaustedDescriptors const&) = delete;

    bool exhausted() const { return m_exhausted; }
    void release() {
        m_fillers.clear();
        ::setrlimit(RLIMIT_NOFILE, &m_saved);
    }

private:
    rlimit m_saved {};
    bool m_lowered { false };
    bool m_exhausted { false };
    std::vector<UniqueFd> m_fillers;
};

std::chrono::microseconds process_cpu_time() {
    rusage usage {};
    ::getrusage(RUSAGE_SELF, &usage);
    auto const to_duration = [](timeval const& value) {
        return std::chrono::seconds(value.tv_sec) + std::chrono::microseconds(value.tv_usec);
    };
    return to_duration(usage.ru_utime) + to_duration(usage.ru_stime);
}

TEST_F(ApiServerTest, AcceptFailingForLackOfDescriptors_IsLoggedBacksOffAndRecovers) {
    if (kvmm::testing::SANITIZED_BUILD)
        GTEST_SKIP() << "a full descriptor table breaks the sanitizers' own checks; the release build runs this";
    CapturedLog log;
    start();
    // The client's own socket exists before the table fills; its connection then waits in the
    // listener's backlog, where the server's accept() fails with EMFILE.
    UniqueFd client(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(client.is_valid());
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, m_path.c_str(), sizeof(address.sun_path) - 1);

    ExhaustedDescriptors exhausted(64);
    ASSERT_TRUE(exhausted.exhausted());
    ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0)
        << std::strerror(errno);
    ASSERT_TRUE(send_all(client.get(), "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));

    // Only the server thread works meanwhile (this one sleeps): a spinning accept loop would
    // use nearly all of the 500 ms; backing off for 100 ms at a time uses a few.
    auto const cpu_before = process_cpu_time();
    std::this_thread::sleep_for(500ms);
    auto const cpu_used = std::chrono::duration_cast<std::chrono::milliseconds>(process_cpu_time() - cpu_before);
    EXPECT_LT(cpu_used, 100ms) << "the server thread spins on the failing accept";

    auto const begin = SteadyClock::now();
    exhausted.release();
    std::string const answer = read_response(client.get(), 3000ms);
    auto const recovered_after = elapsed_since(begin);
    EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
    EXPECT_LT(recovered_after, 1000ms);
    std::printf("accept failing with EMFILE: %lld ms of CPU in 500 ms; served %lld ms after fds were freed\n",
                static_cast<long long>(cpu_used.count()), static_cast<long long>(recovered_after.count()));

    server.reset();
    std::string const text = log.text();
    size_t const first = text.find("cannot accept a client: Too many open files");
    EXPECT_NE(first, std::string::npos) << text;
    EXPECT_EQ(text.find("cannot accept a client", first + 1), std::string::npos) << "not rate-limited: " << text;
}

} // namespace
} // namespace kvmm

// KVM tier, hostile-guest suite: the test guest attacks kvmm through virtio (tests/guests/
// hostile.h) while the test checks, from outside, what a guest must never take away:
//   - the API: PATCH /vm Paused and Resumed run on kvmm's event loop, the loop the attacks try
//     to hold; each round of both answers within 100 ms (the median of three rounds, so one
//     scheduling hiccup of this shared machine does not decide; every single request within
//     1 s);
//   - SIGTERM ends kvmm within 1 s;
//   - kvmm's peak RSS stays under a bound (kvmm itself plus the guest memory the attack
//     touches: the 64 MiB attack buffer at most);
//   - the attack really ran: the device's own counter, read through FlushMetrics, shows the
//     work the guest made kvmm do;
//   - for the vsock flood, kvmm's open fds stay bounded under a 1024-fd limit.
// bench/hostile_guest.py measures the same attacks for the record (before/after numbers).
#include "child_process.h"
#include "kvmm_process.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace kvmm::testing {
namespace {

using namespace std::chrono_literals;

struct Attack {
    std::string name;
    std::vector<std::string> flags;  // besides --kernel, --cmdline and the control socket
    std::string cmdline;             // the guest's scenario
    std::string counter;             // a device counter that shows the attack at work
    uint64_t counter_at_least { 0 }; // after the attack has run a while
    // vsock attacks: a host program listens on this port (kvmm's uds path + "_PORT") and never
    // accepts; kvmm runs under the common 1024 open-file limit and keeps its open fds below
    // max_open_fds.
    unsigned vsock_listen_port { 0 };
    size_t max_open_fds { 0 };
};

std::ostream& operator<<(std::ostream& stream, Attack const& attack) { return stream << attack.name; }

constexpr auto API_ROUND_LIMIT = 100ms;
constexpr auto API_REQUEST_LIMIT = 1000ms;
constexpr auto SIGTERM_LIMIT = 1000ms;
constexpr uint64_t PEAK_RSS_LIMIT_KIB = 128 * 1024;
// Under ThreadSanitizer (preset tsan) kvmm carries shadow memory for everything it touches,
// which alone passes the bound above (160 MiB measured for ConsoleHugeChains), so there the RSS
// bound is not checked; every other check still is.
#if defined(__SANITIZE_THREAD__)
constexpr bool THREAD_SANITIZED_BUILD = true;
#elif defined(__has_feature)
constexpr bool THREAD_SANITIZED_BUILD = __has_feature(thread_sanitizer);
#else
constexpr bool THREAD_SANITIZED_BUILD = false;
#endif

class HostileGuestFixture : public ::testing::Test {
protected:
    void SetUp() override {
        auto const reason = kvm_unavailable_reason();
        if (!reason.empty())
            GTEST_SKIP() << "KVM tier skipped: " << reason;
        char pattern[] = "/tmp/kvmm-hostile-test-XXXXXX";
        m_directory = ::mkdtemp(pattern);
        m_socket = (m_directory / "control.sock").string();
        m_metrics = (m_directory / "metrics.json").string();
        // Sparse: the block attack reads it, which costs the host nothing but zero-filling.
        int disk = ::open((m_directory / "sparse.img").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ASSERT_GE(disk, 0);
        ASSERT_EQ(::ftruncate(disk, off_t { 64 } << 30), 0);
        ::close(disk);
    }
    void TearDown() override {
        if (!m_directory.empty())
            std::filesystem::remove_all(m_directory);
    }

    std::vector<std::string> arguments(Attack const& attack) const {
        std::vector<std::string> arguments;
        if (attack.vsock_listen_port != 0) // the limit of a default login session; prlimit execs kvmm
            arguments = { "/usr/bin/prlimit", "--nofile=1024:1024", "--" };
        std::vector<std::string> const own { kvmm_binary(),    "--kernel", test_guest(), "--cmdline", attack.cmdline,
                                             "--control-sock", m_socket,   "--metrics",  m_metrics,   "--console",
                                             "none",           "--memory", "256M" };
        arguments.insert(arguments.end(), own.begin(), own.end());
        if (attack.vsock_listen_port != 0)
            arguments.insert(arguments.end(), { "--vsock", "cid=3,uds=" + vsock_path() });
        for (auto flag : attack.flags) {
            auto const placeholder = flag.find("{image}");
            if (placeholder != std::string::npos)
                flag.replace(placeholder, 7, (m_directory / "sparse.img").string());
            arguments.push_back(flag);
        }
        return arguments;
    }

    std::string vsock_path() const { return (m_directory / "vsock.sock").string(); }

    // A host program's listener that never accepts: connections pile up in its backlog.
    int listen_without_accepting(unsigned port) const { return listen_on(fmt::format("{}_{}", vsock_path(), port)); }
    static int listen_on(std::string const& path) {
        int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un address {};
        address.sun_family = AF_UNIX;
        std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
        if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
            ::listen(listener, 4096) != 0) {
            ::close(listener);
            return -1;
        }
        return listener;
    }

    // FlushMetrics, then the named counter (0 when the flush fails).
    uint64_t flushed_counter(std::string const& name) const {
        if (http(m_socket, "PUT", "/actions", R"({"action_type": "FlushMetrics"})").status != 204)
            return 0;
        return device_counter(name);
    }

    // The named counter of whichever device reports it, from the last metrics line.
    uint64_t device_counter(std::string const& name) const {
        auto const text = read_text(m_metrics);
        auto const last_line_start = text.rfind('\n', text.size() >= 2 ? text.size() - 2 : 0);
        auto const line =
            nlohmann::json::parse(text.substr(last_line_start == std::string::npos ? 0 : last_line_start + 1), nullptr,
                                  false);
        uint64_t found = 0;
        if (line.is_object() && line.contains("devices"))
            for (auto const& [device, counters] : line["devices"].items())
                if (counters.contains(name))
                    found = std::max(found, counters[name].get<uint64_t>());
        return found;
    }

    std::filesystem::path m_directory;
    std::string m_socket;
    std::string m_metrics;
};

class HostileGuestTest : public HostileGuestFixture, public ::testing::WithParamInterface<Attack> {};

TEST_P(HostileGuestTest, ApiAnswersSigtermEndsKvmmAndMemoryStaysBounded) {
    auto const& attack = GetParam();
    int listener = -1;
    if (attack.vsock_listen_port != 0) {
        listener = listen_without_accepting(attack.vsock_listen_port);
        ASSERT_GE(listener, 0) << std::strerror(errno);
    }
    struct CloseListener {
        int fd;
        ~CloseListener() {
            if (fd >= 0)
                ::close(fd);
        }
    } close_listener { listener };
    KvmmProcess kvmm(arguments(attack), m_directory);
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(m_socket); })) << kvmm.log();
    std::this_thread::sleep_for(1500ms); // let the attack get going

    std::vector<std::chrono::milliseconds> rounds;
    for (int round = 0; round < 3; ++round) {
        auto const started = std::chrono::steady_clock::now();
        for (auto const* state : { "Paused", "Resumed" }) {
            auto const request_started = std::chrono::steady_clock::now();
            auto const answer = http(m_socket, "PATCH", "/vm", fmt::format(R"({{"state": "{}"}})", state));
            auto const took = std::chrono::steady_clock::now() - request_started;
            ASSERT_EQ(answer.status, 204) << state << " got no answer: " << kvmm.log();
            EXPECT_LE(took, API_REQUEST_LIMIT) << state;
        }
        rounds.push_back(
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started));
    }
    std::sort(rounds.begin(), rounds.end());
    EXPECT_LE(rounds[1], API_ROUND_LIMIT) << "median pause+resume round during the attack";

    EXPECT_TRUE(eventually([&] { return flushed_counter(attack.counter) >= attack.counter_at_least; }))
        << "the attack did not run: " << read_text(m_metrics);

    if (attack.max_open_fds != 0) {
        auto const open_fds = static_cast<size_t>(
            std::distance(std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", kvmm.pid())), {}));
        EXPECT_LE(open_fds, attack.max_open_fds);
        ::testing::Test::RecordProperty("open_fds", std::to_string(open_fds));
    }

    auto const peak_rss_kib = kvmm.peak_rss_kib();
    EXPECT_GT(peak_rss_kib, 0u);
    if (!THREAD_SANITIZED_BUILD) {
        EXPECT_LE(peak_rss_kib, PEAK_RSS_LIMIT_KIB);
    }

    auto const signalled = std::chrono::steady_clock::now();
    ASSERT_EQ(::kill(kvmm.pid(), SIGTERM), 0); // our own child, by its pid
    int const status = kvmm.wait(SIGTERM_LIMIT);
    auto const took = std::chrono::steady_clock::now() - signalled;
    EXPECT_NE(status, -1) << "kvmm still ran " << SIGTERM_LIMIT.count() << " ms after SIGTERM";
    ::testing::Test::RecordProperty("sigterm_to_exit_ms",
                                    std::to_string(
                                        std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
    ::testing::Test::RecordProperty("peak_rss_kib", std::to_string(peak_rss_kib));
}

INSTANTIATE_TEST_SUITE_P(
    Attacks, HostileGuestTest,
    ::testing::Values(
        // 1. 256 x 64 KiB entropy buffers re-posted as soon as they come back.
        Attack { "RngRepost", { "--rng" }, "test=hostile-rng", "bytes", 16u << 20 },
        // 2. The same plus a second device reset and re-activated in a loop.
        Attack { "ResetLoop", { "--rng", "--console-device", "virtio" }, "test=hostile-reset", "commands_posted", 200 },
        // 3. Console transmit chains of 16 GiB each (256 aliased 64 MiB descriptors).
        Attack { "ConsoleHugeChains", { "--console-device", "virtio" }, "test=hostile-console", "tx_bytes", 64u << 20 },
        // 4. Block reads of about 2 GiB each into one aliased buffer, both engines: refused.
        Attack { "BlockHugeRequestsIoUring",
                 { "--disk", "path={image},engine=io_uring" },
                 "test=hostile-blk",
                 "errors",
                 256 },
        Attack { "BlockHugeRequestsSync", { "--disk", "path={image},engine=sync" }, "test=hostile-blk", "errors", 256 },
        // 4b. The largest requests a driver may send (seg_max x size_max), both engines: served,
        //     with what is in flight bounded.
        Attack { "BlockLargestRequestsIoUring",
                 { "--disk", "path={image},engine=io_uring" },
                 "test=hostile-blk segments=254 segment_kib=128",
                 "read_bytes",
                 256u << 20 },
        Attack { "BlockLargestRequestsSync",
                 { "--disk", "path={image},engine=sync" },
                 "test=hostile-blk segments=254 segment_kib=128",
                 "read_bytes",
                 256u << 20 },
        // 6. 1100 guest connections to a host listener that never accepts, under a 1024-fd
        //    limit: past the cap the guest gets resets, and kvmm keeps fds for its API.
        Attack { "VsockConnectionFlood",
                 {},
                 "test=hostile-vsock connections=1100 port=1234",
                 "guest_connections_over_limit",
                 1100 - 256,
                 1234,
                 400 }),
    [](::testing::TestParamInfo<Attack> const& attack) { return attack.param.name; });

} // namespace
} // namespace kvmm::testing

namespace kvmm::testing {
namespace {

// Item 10: a guest connection that takes the key (host port, guest port) the next host-initiated
// connection would use must not break host-initiated connections for the rest of the VM's life.
TEST_F(HostileGuestFixture, GuestConnectionOnTheNextHostPortLeavesHostConnectionsWorking) {
    constexpr uint32_t FIRST_HOST_PORT = 1u << 30; // kvmm's first port for host-initiated connections
    int const collider = listen_on(fmt::format("{}_{}", vsock_path(), FIRST_HOST_PORT));
    ASSERT_GE(collider, 0) << std::strerror(errno);
    struct CloseListener {
        int fd;
        ~CloseListener() { ::close(fd); }
    } close_collider { collider };
    KvmmProcess kvmm({ kvmm_binary(), "--kernel", test_guest(), "--cmdline", "test=vsock-collide port=5000",
                       "--control-sock", m_socket, "--metrics", m_metrics, "--memory", "256M", "--vsock",
                       "cid=3,uds=" + vsock_path() },
                     m_directory);
    // The guest's own connection reaches the host program listening on the colliding port.
    pollfd arrived { collider, POLLIN, 0 };
    ASSERT_EQ(::poll(&arrived, 1, 10000), 1) << "the guest's connection never arrived\n" << kvmm.log();
    for (int attempt = 0; attempt < 3; ++attempt) {
        int const client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un address {};
        address.sun_family = AF_UNIX;
        std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", vsock_path().c_str());
        timeval const limit { 5, 0 };
        ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
        ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
        std::string const line = "CONNECT 5000\n";
        ASSERT_EQ(::write(client, line.data(), line.size()), static_cast<ssize_t>(line.size()));
        char answer[64] {};
        ssize_t const got = ::read(client, answer, sizeof(answer) - 1);
        ::close(client);
        EXPECT_GT(got, 0) << "host connection " << attempt << " got no answer\n" << kvmm.output() << kvmm.log();
        EXPECT_EQ(std::string_view(answer).substr(0, 3), "OK ") << "host connection " << attempt << ": " << answer;
    }
    EXPECT_GE(flushed_counter("host_port_collisions"), 1u) << "the collision did not happen: " << read_text(m_metrics);
}

} // namespace
} // namespace kvmm::testing

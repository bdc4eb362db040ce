// KVM tier: kvmm driven through its Firecracker-compatible API on a Unix socket, the way
// firecracker-go-sdk drives Firecracker: logger, metrics, machine-config, boot-source,
// InstanceStart, GET /, PATCH /vm Paused/Resumed, SendCtrlAltDel, FlushMetrics. Also the
// --config-file --no-api mode.
#include "child_process.h"
#include "kvmm_process.h"

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace kvmm::testing {
namespace {

using namespace std::chrono_literals;

class ApiTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto const reason = kvm_unavailable_reason();
        if (!reason.empty())
            GTEST_SKIP() << "KVM tier skipped: " << reason;
        char pattern[] = "/tmp/kvmm-api-test-XXXXXX";
        m_directory = ::mkdtemp(pattern);
        m_socket = (m_directory / "api.sock").string();
    }
    void TearDown() override {
        if (!m_directory.empty())
            std::filesystem::remove_all(m_directory);
    }

    std::filesystem::path m_directory;
    std::string m_socket;
};

TEST_F(ApiTest, GoSdkBootSequencePauseResumeAndCtrlAltDel) {
    KvmmProcess kvmm({ kvmm_binary(), "--api-sock", m_socket, "--id", "api-test-vm" }, m_directory);
    ASSERT_TRUE(eventually([&] { return http(m_socket, "GET", "/").status == 200; })) << kvmm.log();

    auto info = http(m_socket, "GET", "/");
    EXPECT_NE(info.body.find("\"Not started\""), std::string::npos) << info.body;
    EXPECT_NE(info.body.find("api-test-vm"), std::string::npos) << info.body;

    // The SDK creates the log and metrics destinations (FIFOs, or files) before it names them.
    auto const log_path = (m_directory / "kvmm.log").string();
    auto const metrics_path = (m_directory / "metrics.json").string();
    std::ofstream(log_path).close();
    std::ofstream(metrics_path).close();
    EXPECT_EQ(http(m_socket, "PUT", "/logger", R"({"log_path": ")" + log_path + R"(", "level": "Info"})").status, 204);
    EXPECT_EQ(http(m_socket, "PUT", "/metrics", R"({"metrics_path": ")" + metrics_path + R"("})").status, 204);
    EXPECT_EQ(http(m_socket, "PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 64, "smt": false})").status,
              204);
    // Bad requests on the way are refused with a reason and change nothing.
    auto const malformed = http(m_socket, "PUT", "/machine-config", R"({"vcpu_count": )");
    EXPECT_EQ(malformed.status, 400);
    EXPECT_NE(malformed.body.find("fault_message"), std::string::npos);
    EXPECT_EQ(http(m_socket, "PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 64, "colour": 1})").status,
              400);
    EXPECT_EQ(http(m_socket, "PATCH", "/vm", R"({"state": "Paused"})").status, 400) << "not started yet";
    auto const disk_path = (m_directory / "disk.img").string();
    std::ofstream(disk_path).close();
    std::filesystem::resize_file(disk_path, 1 << 20);
    EXPECT_EQ(http(m_socket, "PUT", "/drives/data",
                   R"({"drive_id": "data", "path_on_host": ")" + disk_path +
                       R"(", "is_root_device": false, "is_read_only": false,
                       "rate_limiter": {"ops": {"size": 100, "refill_time": 1000}}})")
                  .status,
              204);
    EXPECT_EQ(http(m_socket, "PUT", "/boot-source",
                   R"({"kernel_image_path": ")" + test_guest() + R"(", "boot_args": "test=keyboard-wait"})")
                  .status,
              204);
    auto const started = http(m_socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})");
    ASSERT_EQ(started.status, 204) << started.body << kvmm.log();
    EXPECT_NE(http(m_socket, "GET", "/").body.find("\"Running\""), std::string::npos);
    ASSERT_TRUE(eventually([&] { return kvmm.output().find("tick") != std::string::npos; }, 15s)) << kvmm.output();

    // Paused: GET / says so, and the guest's once-a-second ticks stop.
    ASSERT_EQ(http(m_socket, "PATCH", "/vm", R"({"state": "Paused"})").status, 204);
    EXPECT_NE(http(m_socket, "GET", "/").body.find("\"Paused\""), std::string::npos);
    auto const while_paused =
        http(m_socket, "PATCH", "/drives/data", R"({"drive_id": "data", "path_on_host": ")" + disk_path + R"("})");
    EXPECT_EQ(while_paused.status, 400);
    EXPECT_NE(while_paused.body.find("paused"), std::string::npos) << while_paused.body;
    auto const output_at_pause = kvmm.output();
    std::this_thread::sleep_for(2500ms);
    EXPECT_EQ(kvmm.output(), output_at_pause) << "the guest ran while paused";
    ASSERT_EQ(http(m_socket, "PATCH", "/vm", R"({"state": "Resumed"})").status, 204);
    EXPECT_NE(http(m_socket, "GET", "/").body.find("\"Running\""), std::string::npos);
    EXPECT_TRUE(eventually([&] { return kvmm.output().size() > output_at_pause.size(); }, 5s))
        << "no tick after resume";

    EXPECT_EQ(http(m_socket, "PUT", "/boot-source", R"({"kernel_image_path": "/x"})").status, 400)
        << "pre-boot resource after start";
    // A running drive's limits and backing file change; bad paths and unknown drives are named.
    auto const patched = http(m_socket, "PATCH", "/drives/data",
                              R"({"drive_id": "data", "rate_limiter": {"bandwidth": {"size": 1048576,
                                  "refill_time": 100}, "ops": {"size": 0, "refill_time": 0}}})");
    EXPECT_EQ(patched.status, 204) << patched.body;
    auto const vm_config = http(m_socket, "GET", "/vm/config");
    EXPECT_NE(vm_config.body.find("1048576"), std::string::npos) << vm_config.body;
    auto const other_disk = (m_directory / "other.img").string();
    std::ofstream(other_disk).close();
    std::filesystem::resize_file(other_disk, 2 << 20);
    auto const moved =
        http(m_socket, "PATCH", "/drives/data", R"({"drive_id": "data", "path_on_host": ")" + other_disk + R"("})");
    EXPECT_EQ(moved.status, 204) << moved.body << kvmm.log();
    EXPECT_NE(http(m_socket, "GET", "/vm/config").body.find(other_disk), std::string::npos);
    std::filesystem::resize_file(other_disk, 4 << 20); // grown on the host, announced with its own path
    auto const resized =
        http(m_socket, "PATCH", "/drives/data", R"({"drive_id": "data", "path_on_host": ")" + other_disk + R"("})");
    EXPECT_EQ(resized.status, 204) << resized.body;
    EXPECT_NE(read_text(log_path).find("size now 8192 sectors"), std::string::npos) << read_text(log_path);
    auto const missing =
        http(m_socket, "PATCH", "/drives/data", R"({"drive_id": "data", "path_on_host": "/nonexistent/disk.img"})");
    EXPECT_EQ(missing.status, 400);
    EXPECT_NE(missing.body.find("/nonexistent/disk.img"), std::string::npos) << missing.body;
    EXPECT_NE(http(m_socket, "GET", "/vm/config").body.find(other_disk), std::string::npos) << "unchanged";
    auto const unknown = http(m_socket, "PATCH", "/drives/nope", R"({"drive_id": "nope", "rate_limiter": {}})");
    EXPECT_EQ(unknown.status, 400);
    EXPECT_NE(unknown.body.find("'nope'"), std::string::npos) << unknown.body;
    EXPECT_EQ(http(m_socket, "PUT", "/actions", R"({"action_type": "FlushMetrics"})").status, 204);
    auto const metrics = read_text(metrics_path);
    EXPECT_NE(metrics.find("\"exit_io\""), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("\"put_requests\""), std::string::npos) << metrics;

    EXPECT_EQ(http(m_socket, "PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})").status, 204);
    EXPECT_EQ(kvmm.wait(15s), 0) << kvmm.output() << kvmm.log();
    EXPECT_NE(kvmm.output().find("kvmm-test: ctrl-alt-del received"), std::string::npos) << kvmm.output();
    EXPECT_NE(read_text(log_path).find("VM paused"), std::string::npos) << "the logger file gets kvmm's log";
    EXPECT_FALSE(std::filesystem::exists(m_socket)) << "the socket is removed on exit";
}

TEST_F(ApiTest, FailedInstanceStartLeavesTheApiUsable) {
    KvmmProcess kvmm({ kvmm_binary(), "--api-sock", m_socket }, m_directory);
    ASSERT_TRUE(eventually([&] { return http(m_socket, "GET", "/").status == 200; })) << kvmm.log();
    // A file that opens but is no kernel passes the PUT and fails the build.
    auto const not_a_kernel = (m_directory / "not-a-kernel").string();
    std::ofstream(not_a_kernel) << "not a kernel";
    EXPECT_EQ(http(m_socket, "PUT", "/boot-source", R"({"kernel_image_path": ")" + not_a_kernel + R"("})").status, 204);
    auto const failed = http(m_socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})");
    EXPECT_EQ(failed.status, 400);
    EXPECT_NE(failed.body.find("not-a-kernel"), std::string::npos) << failed.body;
    EXPECT_NE(http(m_socket, "GET", "/").body.find("\"Not started\""), std::string::npos);
    EXPECT_EQ(http(m_socket, "PUT", "/boot-source",
                   R"({"kernel_image_path": ")" + test_guest() + R"(", "boot_args": "test=hello"})")
                  .status,
              204);
    EXPECT_EQ(http(m_socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 204);
    EXPECT_EQ(kvmm.wait(15s), 0) << kvmm.log();
    EXPECT_NE(kvmm.output().find("kvmm-test-guest: hello"), std::string::npos) << kvmm.output();
}

TEST_F(ApiTest, ConfigFileWithoutApiBootsTheGuest) {
    auto const config_path = m_directory / "vm.json";
    std::ofstream(config_path) << R"({
        "boot-source": { "kernel_image_path": ")"
                               << test_guest() << R"(", "boot_args": "test=hello" },
        "machine-config": { "vcpu_count": 2, "mem_size_mib": 64 }
    })";
    KvmmProcess kvmm({ kvmm_binary(), "--config-file", config_path.string(), "--no-api" }, m_directory);
    EXPECT_EQ(kvmm.wait(15s), 0) << kvmm.log();
    EXPECT_NE(kvmm.output().find("kvmm-test-guest: hello"), std::string::npos) << kvmm.output();
}

TEST_F(ApiTest, BadConfigFileIsAConfigurationError) {
    auto const config_path = m_directory / "vm.json";
    std::ofstream(config_path) << R"({ "boot-source": { "kernel_image_path": 7 } })";
    KvmmProcess kvmm({ kvmm_binary(), "--config-file", config_path.string(), "--no-api" }, m_directory);
    EXPECT_EQ(kvmm.wait(10s), 1);
    EXPECT_NE(kvmm.log().find("kernel_image_path"), std::string::npos) << kvmm.log();
}

// Firecracker's launch flags, as its SDK and jailer setups pass them: every one is accepted, the
// logger, metrics and payload flags act as their requests would, and once a log path is set
// kvmm's log goes there and no longer to stderr.
TEST_F(ApiTest, FirecrackerFlagsAreAcceptedAndTheLoggerAndPayloadFlagsTakeEffect) {
    auto const log_path = (m_directory / "fc.log").string();
    auto const metrics_path = (m_directory / "fc-metrics.json").string();
    std::ofstream(log_path).close();
    std::ofstream(metrics_path).close();
    KvmmProcess kvmm({ kvmm_binary(),
                       "--api-sock",
                       m_socket,
                       "--id",
                       "fc-flags",
                       "--no-seccomp",
                       "--boot-timer",
                       "--mmds-size-limit",
                       "4096",
                       "--start-time-us",
                       "1",
                       "--start-time-cpu-us",
                       "1",
                       "--parent-cpu-time-us",
                       "1",
                       "--module",
                       "api",
                       "--level",
                       "Info",
                       "--log-path",
                       log_path,
                       "--show-level",
                       "--show-log-origin",
                       "--metrics-path",
                       metrics_path,
                       "--http-api-max-payload-size",
                       "300" },
                     m_directory);
    ASSERT_TRUE(eventually([&] { return http(m_socket, "GET", "/").status == 200; })) << kvmm.log();
    EXPECT_NE(http(m_socket, "GET", "/").body.find("fc-flags"), std::string::npos);
    EXPECT_EQ(http(m_socket, "PUT", "/boot-source", R"({"boot_args": ")" + std::string(400, 'x') + R"("})").status, 413)
        << "a body over --http-api-max-payload-size";
    EXPECT_EQ(http(m_socket, "PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 64, "smt": true})").status,
              204);
    EXPECT_EQ(http(m_socket, "PUT", "/boot-source",
                   R"({"kernel_image_path": ")" + test_guest() + R"(", "boot_args": "test=keyboard-wait"})")
                  .status,
              204);
    auto const started = http(m_socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})");
    ASSERT_EQ(started.status, 204) << started.body << read_text(log_path);
    EXPECT_EQ(http(m_socket, "PUT", "/actions", R"({"action_type": "FlushMetrics"})").status, 204);
    EXPECT_NE(read_text(metrics_path).find("\"put_requests\""), std::string::npos) << read_text(metrics_path);
    EXPECT_EQ(http(m_socket, "PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})").status, 204);
    EXPECT_EQ(kvmm.wait(15s), 0) << kvmm.log();
    auto const logged = read_text(log_path);
    EXPECT_NE(logged.find("[info]"), std::string::npos) << "--show-level: " << logged;
    EXPECT_NE(logged.find("VM started"), std::string::npos) << logged;
    EXPECT_EQ(kvmm.log().find("VM started"), std::string::npos) << "logged to stderr too: " << kvmm.log();
}

// Firecracker's test_api_socket_in_use: a socket bound to the path, even one that does not
// listen, makes the start fail with a message naming the path.
TEST_F(ApiTest, ApiSocketPathBoundByAnotherSocketRefusesToStart) {
    int const other = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(other, 0);
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    m_socket.copy(address.sun_path, sizeof(address.sun_path) - 1);
    ASSERT_EQ(::bind(other, reinterpret_cast<sockaddr const*>(&address), sizeof(address)), 0);
    KvmmProcess kvmm({ kvmm_binary(), "--api-sock", m_socket }, m_directory);
    EXPECT_EQ(kvmm.wait(5s), 1) << kvmm.log();
    EXPECT_NE(kvmm.log().find(m_socket), std::string::npos) << kvmm.log();
    EXPECT_NE(kvmm.log().find("in use"), std::string::npos) << kvmm.log();
    ::close(other);
}

// The test guest has no balloon driver, so it never reports statistics: the statistics are
// answered from the first moment, as Firecracker does, and a balloon larger than the guest's
// memory is refused before and after boot instead of being asked of the guest.
TEST_F(ApiTest, BalloonStaysWithinGuestMemoryAndAnswersStatisticsBeforeTheGuestReports) {
    KvmmProcess kvmm({ kvmm_binary(), "--api-sock", m_socket }, m_directory);
    ASSERT_TRUE(eventually([&] { return http(m_socket, "GET", "/").status == 200; })) << kvmm.log();
    EXPECT_EQ(http(m_socket, "PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 64})").status, 204);
    auto const too_large = http(m_socket, "PUT", "/balloon", R"({"amount_mib": 65, "deflate_on_oom": false})");
    EXPECT_EQ(too_large.status, 400) << too_large.body;
    EXPECT_EQ(http(m_socket, "PUT", "/balloon",
                   R"({"amount_mib": 16, "deflate_on_oom": false, "stats_polling_interval_s": 1})")
                  .status,
              204);
    EXPECT_EQ(http(m_socket, "PATCH", "/machine-config", R"({"mem_size_mib": 15})").status, 400);
    EXPECT_EQ(http(m_socket, "PATCH", "/balloon", R"({"amount_mib": 8})").status, 400) << "pre-boot";
    EXPECT_EQ(http(m_socket, "PATCH", "/balloon/statistics", R"({"stats_polling_interval_s": 2})").status, 400);
    EXPECT_EQ(http(m_socket, "PUT", "/boot-source",
                   R"({"kernel_image_path": ")" + test_guest() + R"(", "boot_args": "test=keyboard-wait"})")
                  .status,
              204);
    auto const started = http(m_socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})");
    ASSERT_EQ(started.status, 204) << started.body << kvmm.log();

    auto const statistics = http(m_socket, "GET", "/balloon/statistics");
    EXPECT_EQ(statistics.status, 200) << statistics.body;
    EXPECT_NE(statistics.body.find("\"target_mib\":16"), std::string::npos) << statistics.body;
    EXPECT_NE(statistics.body.find("\"actual_pages\""), std::string::npos) << statistics.body;
    auto const past_memory = http(m_socket, "PATCH", "/balloon", R"({"amount_mib": 65})");
    EXPECT_EQ(past_memory.status, 400) << past_memory.body;
    EXPECT_NE(past_memory.body.find("larger than the guest memory"), std::string::npos) << past_memory.body;
    EXPECT_EQ(http(m_socket, "PATCH", "/balloon", R"({"amount_mib": 32})").status, 204);
    EXPECT_NE(http(m_socket, "GET", "/balloon").body.find("\"amount_mib\":32"), std::string::npos);
    EXPECT_EQ(http(m_socket, "PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})").status, 204);
    EXPECT_EQ(kvmm.wait(15s), 0) << kvmm.log();
}

} // namespace
} // namespace kvmm::testing

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

    auto const log_path = (m_directory / "kvmm.log").string();
    auto const metrics_path = (m_directory / "metrics.json").string();
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
    EXPECT_EQ(http(m_socket, "PUT", "/boot-source", R"({"kernel_image_path": "/nonexistent/kernel"})").status, 204);
    auto const failed = http(m_socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})");
    EXPECT_EQ(failed.status, 400);
    EXPECT_NE(failed.body.find("/nonexistent/kernel"), std::string::npos) << failed.body;
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

} // namespace
} // namespace kvmm::testing

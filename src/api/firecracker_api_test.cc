#include "api/firecracker_api.h"

#include "api/fake_vmm_controller.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

namespace kvmm {
namespace {

using nlohmann::json;

class FirecrackerApiTest : public ::testing::Test {
protected:
    HttpResponse call(std::string method, std::string target, std::string body = {}) {
        HttpRequest request;
        request.method = std::move(method);
        request.target = std::move(target);
        request.body = std::move(body);
        return api.handle(request);
    }
    void expect_ok(HttpResponse const& response, int status = 204) {
        EXPECT_EQ(response.status, status) << response.body;
    }
    // Expects a 400 whose fault_message contains `fragment`.
    void expect_fault(HttpResponse const& response, std::string_view fragment) {
        EXPECT_EQ(response.status, 400);
        auto body = json::parse(response.body);
        ASSERT_TRUE(body.contains("fault_message")) << response.body;
        EXPECT_NE(body["fault_message"].get<std::string>().find(fragment), std::string::npos) << response.body;
    }
    std::string state() { return json::parse(call("GET", "/").body)["state"]; }
    void configure_minimal() { expect_ok(call("PUT", "/boot-source", R"({"kernel_image_path": "/k"})")); }
    void boot() {
        configure_minimal();
        expect_ok(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"));
    }

    FakeVmmController controller;
    FirecrackerApi api { controller, ApiIdentity { "vm0", "0.1.0" } };
};

TEST_F(FirecrackerApiTest, GoSdkBootSequence_StartsPausesAndResumes) {
    std::string log_path = ::testing::TempDir() + "kvmm-api-test-log-" + std::to_string(::getpid());
    ::unlink(log_path.c_str());
    expect_ok(call("PUT", "/logger", json { { "log_path", log_path }, { "level", "debug" } }.dump()));
    EXPECT_TRUE(controller.logger_sink_open);
    EXPECT_EQ(controller.logger->level, "Debug");
    struct stat status {};
    ASSERT_EQ(::stat(log_path.c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 0777, 0600u);

    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256, "smt": false})"));
    expect_ok(call("PUT", "/boot-source", R"({"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"})"));
    expect_ok(call("PUT", "/drives/rootfs",
                   R"({"drive_id": "rootfs", "path_on_host": "/rootfs.ext4", "is_root_device": true,
                       "is_read_only": false, "io_engine": "Async",
                       "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}})"));
    expect_ok(call("PUT", "/network-interfaces/eth0",
                   R"({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "AA:FC:00:00:00:01"})"));
    EXPECT_EQ(state(), "Not started");
    expect_ok(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"));

    ASSERT_TRUE(controller.started_with);
    VmConfig const& vm = controller.started_with->vm;
    EXPECT_EQ(vm.vcpu_count, 2u);
    EXPECT_EQ(vm.memory_size, 256ull << 20);
    EXPECT_EQ(vm.kernel_path, "/vmlinux");
    EXPECT_EQ(vm.cmdline, "console=ttyS0");
    ASSERT_EQ(vm.disks.size(), 1u);
    EXPECT_EQ(vm.disks[0].id, "rootfs");
    EXPECT_EQ(vm.disks[0].path, "/rootfs.ext4");
    EXPECT_TRUE(vm.disks[0].is_root_device);
    EXPECT_EQ(vm.disks[0].engine, DiskConfig::Engine::IoUring);
    EXPECT_EQ(vm.disks[0].rate_limit.bandwidth, (TokenBucketConfig { 1000, 0, 100 }));
    ASSERT_EQ(vm.nets.size(), 1u);
    EXPECT_EQ(vm.nets[0].tap_name, "tap0");
    EXPECT_EQ(vm.nets[0].mac, (MacAddress { 0xaa, 0xfc, 0, 0, 0, 1 }));

    auto info = json::parse(call("GET", "/").body);
    EXPECT_EQ(info["id"], "vm0");
    EXPECT_EQ(info["state"], "Running");
    EXPECT_EQ(info["app_name"], "kvmm");
    EXPECT_EQ(info["vmm_version"], "0.1.0");
    expect_ok(call("PATCH", "/vm", R"({"state": "Paused"})"));
    EXPECT_EQ(state(), "Paused");
    expect_ok(call("PATCH", "/vm", R"({"state": "Resumed"})"));
    EXPECT_EQ(state(), "Running");
    ::unlink(log_path.c_str());
}

TEST_F(FirecrackerApiTest, VmConfig_ReflectsEveryConfiguredResource) {
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 4, "mem_size_mib": 512, "huge_pages": "2M"})"));
    expect_ok(call("PUT", "/boot-source", R"({"kernel_image_path": "/k", "initrd_path": "/i"})"));
    expect_ok(call("PUT", "/drives/d1", R"({"drive_id": "d1", "path_on_host": "/d", "is_root_device": false})"));
    expect_ok(call("PUT", "/vsock", R"({"guest_cid": 7, "uds_path": "/v.sock", "vsock_id": "vsock0"})"));
    expect_ok(call("PUT", "/entropy", R"({"rate_limiter": {"ops": {"size": 10, "refill_time": 1000}}})"));
    expect_ok(call("PUT", "/balloon", R"({"amount_mib": 64, "deflate_on_oom": true})"));
    auto response = call("GET", "/vm/config");
    expect_ok(response, 200);
    auto config = json::parse(response.body);
    EXPECT_EQ(config["machine-config"]["vcpu_count"], 4);
    EXPECT_EQ(config["machine-config"]["mem_size_mib"], 512);
    EXPECT_EQ(config["machine-config"]["huge_pages"], "2M");
    EXPECT_EQ(config["boot-source"]["initrd_path"], "/i");
    EXPECT_EQ(config["drives"][0]["drive_id"], "d1");
    EXPECT_EQ(config["drives"][0]["io_engine"], "Sync");
    EXPECT_EQ(config["vsock"]["guest_cid"], 7);
    EXPECT_EQ(config["entropy"]["rate_limiter"]["ops"]["size"], 10);
    EXPECT_EQ(config["balloon"]["amount_mib"], 64);
    EXPECT_EQ(config["balloon"]["deflate_on_oom"], true);
    EXPECT_TRUE(config["logger"].is_null());
}

TEST_F(FirecrackerApiTest, MachineConfigPatch_ChangesOnlyGivenFieldsAndFailsAtomically) {
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256})"));
    expect_ok(call("PATCH", "/machine-config", R"({"mem_size_mib": 1024})"));
    auto config = json::parse(call("GET", "/machine-config").body);
    EXPECT_EQ(config["vcpu_count"], 2);
    EXPECT_EQ(config["mem_size_mib"], 1024);
    expect_fault(call("PATCH", "/machine-config", R"({"mem_size_mib": 64, "vcpu_count": 33})"), "vcpu_count");
    EXPECT_EQ(json::parse(call("GET", "/machine-config").body)["mem_size_mib"], 1024);
    expect_fault(call("PATCH", "/machine-config", "{}"), "empty PATCH");
}

TEST_F(FirecrackerApiTest, MachineConfigInvalidValues_AreRejectedWithTheField) {
    expect_fault(call("PUT", "/machine-config", R"({"vcpu_count": 0, "mem_size_mib": 128})"), "vcpu_count");
    expect_fault(call("PUT", "/machine-config", R"({"vcpu_count": -1, "mem_size_mib": 128})"), "negative");
    expect_fault(call("PUT", "/machine-config", R"({"vcpu_count": 1.5, "mem_size_mib": 128})"), "unsigned integer");
    expect_fault(call("PUT", "/machine-config", R"({"vcpu_count": 1})"), "mem_size_mib");
    expect_fault(call("PUT", "/machine-config", R"({"vcpu_count": 3, "mem_size_mib": 128, "smt": true})"), "smt");
    expect_fault(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 127, "huge_pages": "2M"})"),
                 "multiple of 2");
    expect_fault(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "T2"})"),
                 "CPU templates");
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "None"})"));
}

TEST_F(FirecrackerApiTest, MalformedBodies_Are400NamingTheProblem) {
    expect_fault(call("PUT", "/boot-source", "{\"kernel_image_path\": "), "malformed JSON");
    expect_fault(call("PUT", "/boot-source", ""), "empty request body");
    expect_fault(call("PUT", "/boot-source", "[1]"), "expected a JSON object");
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": 5})"), "'kernel_image_path' must be a string");
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "/k", "extra": 1})"), "unknown field 'extra'");
    expect_fault(call("PUT", "/drives/rootfs",
                      R"({"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": "yes"})"),
                 "'is_root_device' must be a boolean");
    expect_fault(
        call("PUT", "/network-interfaces/eth0",
             R"({"iface_id": "eth0", "host_dev_name": "tap0", "rx_rate_limiter": {"bandwidth": {"size": 1}}})"),
        "refill_time");
    expect_fault(call("PUT", "/network-interfaces/eth0",
                      R"({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "zz:00:00:00:00:00"})"),
                 "guest_mac");
    expect_fault(call("PUT", "/actions", R"({"action_type": "Reboot"})"), "action_type");
    expect_fault(call("PUT", "/vsock", R"({"guest_cid": 2, "uds_path": "/v"})"), "guest_cid");
}

// A NUL would end the path where the kernel reads it ("/etc/shadow\0.img" opens /etc/shadow);
// every path field refuses it and the other control characters, naming the field.
TEST_F(FirecrackerApiTest, PathsWithControlCharacters_Are400NamingTheField) {
    struct Case {
        char const* method;
        char const* target;
        std::string body;
        char const* field;
    };
    std::vector<Case> const cases {
        { "PUT", "/boot-source", R"({"kernel_image_path": "/vmlinux\u0000.bak"})", "'kernel_image_path'" },
        { "PUT", "/boot-source", R"({"kernel_image_path": "/k", "initrd_path": "/initrd\u001b[2J"})", "'initrd_path'" },
        { "PUT", "/drives/rootfs",
          R"({"drive_id": "rootfs", "path_on_host": "/etc/shadow\u0000.img", "is_root_device": true})",
          "'path_on_host'" },
        { "PUT", "/network-interfaces/eth0", R"({"iface_id": "eth0", "host_dev_name": "tap\n0"})", "'host_dev_name'" },
        { "PUT", "/vsock", R"({"guest_cid": 3, "uds_path": "/run/v.sock\u007f"})", "'uds_path'" },
        { "PUT", "/logger", R"({"log_path": "/tmp/log\u0000"})", "'log_path'" },
        { "PUT", "/metrics", R"({"metrics_path": "/tmp/metrics\t"})", "'metrics_path'" },
    };
    for (auto const& c : cases) {
        auto const response = call(c.method, c.target, c.body);
        expect_fault(response, c.field);
        expect_fault(response, "control character");
    }
    EXPECT_TRUE(api.config().instance.vm.kernel_path.empty());
    EXPECT_TRUE(api.config().instance.vm.disks.empty());
    EXPECT_TRUE(api.config().instance.vm.nets.empty());
    EXPECT_FALSE(api.config().instance.vm.vsock);
    EXPECT_FALSE(controller.logger);
    EXPECT_FALSE(controller.metrics_sink_open);

    // The same after boot: a drive's new backing file.
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "/a", "is_root_device": false})"));
    boot();
    expect_fault(call("PATCH", "/drives/a", R"({"drive_id": "a", "path_on_host": "/etc/shadow\u0000.img"})"),
                 "'path_on_host'");
    EXPECT_EQ(api.config().instance.vm.disks[0].path, "/a");
}

TEST_F(FirecrackerApiTest, DriveRules_IdsMatchAndOneRootDevice) {
    expect_fault(call("PUT", "/drives/a", R"({"drive_id": "b", "path_on_host": "/r", "is_root_device": false})"),
                 "does not match");
    expect_fault(call("PUT", "/drives/a-b", R"({"drive_id": "a-b", "path_on_host": "/r", "is_root_device": false})"),
                 "letters, digits");
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "/r", "is_root_device": true})"));
    expect_fault(call("PUT", "/drives/b", R"({"drive_id": "b", "path_on_host": "/s", "is_root_device": true})"),
                 "already the root device");
    // Replacing the root drive itself is fine and keeps one entry.
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "/t", "is_root_device": true})"));
    EXPECT_EQ(api.config().instance.vm.disks.size(), 1u);
    EXPECT_EQ(api.config().instance.vm.disks[0].path, "/t");
    expect_fault(call("PUT", "/drives/c", R"({"drive_id": "c", "path_on_host": "/c", "is_root_device": false,
                                             "partuuid": "0eaa91a0-01"})"),
                 "partuuid");
    expect_fault(call("PUT", "/drives/c", R"({"drive_id": "c", "path_on_host": "/c", "is_root_device": false,
                                             "cache_type": "None"})"),
                 "cache_type");
}

TEST_F(FirecrackerApiTest, UnknownPathsAndMethods_AreInvalidRequest) {
    expect_fault(call("GET", "/nothing"), "Invalid request method and/or path: GET /nothing");
    expect_fault(call("DELETE", "/machine-config"), "Invalid request method and/or path");
    expect_fault(call("GET", "/boot-source"), "Invalid request method and/or path");
    expect_fault(call("PUT", "/drives", "{}"), "Invalid request method and/or path");
    expect_fault(call("POST", "/actions", R"({"action_type": "InstanceStart"})"), "Invalid request method");
    expect_fault(call("GET", "/balloon/other"), "Invalid request method");
}

TEST_F(FirecrackerApiTest, FeaturesKvmmLacks_SaySo) {
    expect_fault(call("PUT", "/snapshot/create", "{}"), "snapshots are not supported");
    expect_fault(call("PUT", "/snapshot/load", "{}"), "snapshots are not supported");
    expect_fault(call("PUT", "/mmds", "{}"), "MMDS");
    expect_fault(call("PUT", "/mmds/config", "{}"), "MMDS");
    expect_fault(call("PUT", "/cpu-config", "{}"), "CPU");
    expect_fault(call("PUT", "/hotplug/memory", "{}"), "hot-plugging");
    expect_fault(call("PUT", "/pmem/p0", "{}"), "pmem");
}

TEST_F(FirecrackerApiTest, PreBootResourcesAfterStart_AreRejected) {
    boot();
    for (auto const& [path, body] : std::vector<std::pair<std::string, std::string>> {
             { "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128})" },
             { "/boot-source", R"({"kernel_image_path": "/k"})" },
             { "/drives/d", R"({"drive_id": "d", "path_on_host": "/d", "is_root_device": false})" },
             { "/network-interfaces/n", R"({"iface_id": "n", "host_dev_name": "tap9"})" },
             { "/vsock", R"({"guest_cid": 3, "uds_path": "/v"})" },
             { "/entropy", "{}" },
             { "/balloon", R"({"amount_mib": 1, "deflate_on_oom": false})" },
             { "/logger", R"({"level": "Info"})" },
             { "/metrics", R"({"metrics_path": "/m"})" } })
        expect_fault(call("PUT", path, body), "cannot be changed after the microVM has started");
    expect_fault(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"), "already started");
}

TEST_F(FirecrackerApiTest, PostBootOperationsBeforeStart_AreRejected) {
    expect_fault(call("PATCH", "/vm", R"({"state": "Paused"})"), "only available after the microVM has started");
    expect_fault(call("PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})"), "only available after");
    expect_fault(call("PATCH", "/drives/a", R"({"drive_id": "a", "path_on_host": "/x"})"), "only available after");
    expect_fault(call("PATCH", "/network-interfaces/a", R"({"iface_id": "a"})"), "only available after");
    expect_fault(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"), "no boot source");
    EXPECT_TRUE(controller.calls.empty());
}

TEST_F(FirecrackerApiTest, FailedStart_LeavesThePreBootStateUsable) {
    configure_minimal();
    controller.fail_next = true;
    expect_fault(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"), "controller refused");
    EXPECT_FALSE(api.started());
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128})"));
    expect_ok(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"));
}

TEST_F(FirecrackerApiTest, PostBootUpdates_ReachTheControllerAndTheStoredConfig) {
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "/a", "is_root_device": false})"));
    expect_ok(call("PUT", "/network-interfaces/n", R"({"iface_id": "n", "host_dev_name": "tap1"})"));
    expect_ok(call("PUT", "/balloon", R"({"amount_mib": 10, "deflate_on_oom": false, "stats_polling_interval_s": 1})"));
    boot();
    expect_ok(call("PATCH", "/drives/a", R"({"drive_id": "a", "path_on_host": "/b"})"));
    EXPECT_EQ(api.config().instance.vm.disks[0].path, "/b");
    expect_fault(call("PATCH", "/drives/zz", R"({"drive_id": "zz"})"), "does not exist");
    expect_ok(call("PATCH", "/network-interfaces/n",
                   R"({"iface_id": "n", "tx_rate_limiter": {"ops": {"size": 5, "refill_time": 10}}})"));
    EXPECT_EQ(api.config().instance.vm.nets[0].tx_rate_limit.ops, (TokenBucketConfig { 5, 0, 10 }));
    expect_ok(call("PATCH", "/balloon", R"({"amount_mib": 32})"));
    EXPECT_EQ(controller.balloon_target_mib, 32u);
    EXPECT_EQ(json::parse(call("GET", "/balloon").body)["amount_mib"], 32);
    auto stats = call("GET", "/balloon/statistics");
    expect_ok(stats, 200);
    EXPECT_EQ(json::parse(stats.body)["target_pages"], 32 * 256);
    expect_ok(call("PATCH", "/balloon/statistics", R"({"stats_polling_interval_s": 5})"));
    EXPECT_EQ(controller.statistics_interval_s, 5u);
    expect_fault(call("PATCH", "/balloon/statistics", R"({"stats_polling_interval_s": 0})"), "enabled or disabled");
    expect_ok(call("PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})"));
    EXPECT_EQ(controller.calls.back(), "send_ctrl_alt_del");
    controller.fail_next = true;
    expect_fault(call("PATCH", "/vm", R"({"state": "Paused"})"), "controller refused");
}

TEST_F(FirecrackerApiTest, RateLimiterPatch_ReplacesGivenBucketsRemovesZeroOnesKeepsTheRest) {
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "/a", "is_root_device": false,
        "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}, "ops": {"size": 0, "refill_time": 100}}})"));
    auto const& disk = api.config().instance.vm.disks[0];
    EXPECT_EQ(disk.rate_limit.bandwidth, (TokenBucketConfig { 1000, 0, 100 }));
    EXPECT_FALSE(disk.rate_limit.ops.has_value()); // a zero-sized bucket is no bucket
    boot();
    expect_ok(
        call("PATCH", "/drives/a", R"({"drive_id": "a", "rate_limiter": {"ops": {"size": 50, "refill_time": 1000}}})"));
    EXPECT_EQ(disk.rate_limit.bandwidth, (TokenBucketConfig { 1000, 0, 100 }));
    EXPECT_EQ(disk.rate_limit.ops, (TokenBucketConfig { 50, 0, 1000 }));
    expect_ok(call("PATCH", "/drives/a",
                   R"({"drive_id": "a", "rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0}}})"));
    EXPECT_FALSE(disk.rate_limit.bandwidth.has_value());
    EXPECT_EQ(disk.rate_limit.ops, (TokenBucketConfig { 50, 0, 1000 }));
    // The controller got the changes as sent: the zero bucket tells the device to drop its limit.
    ASSERT_TRUE(controller.drive_rate_limit.has_value());
    EXPECT_EQ(controller.drive_rate_limit->bandwidth, (TokenBucketConfig { 0, 0, 0 }));
    EXPECT_FALSE(controller.drive_rate_limit->ops.has_value());
    // A refused change leaves the stored configuration as it was.
    controller.fail_next = true;
    expect_fault(call("PATCH", "/drives/a",
                      R"({"drive_id": "a", "rate_limiter": {"ops": {"size": 1, "refill_time": 1}}})"),
                 "controller refused");
    EXPECT_EQ(disk.rate_limit.ops, (TokenBucketConfig { 50, 0, 1000 }));
}

TEST_F(FirecrackerApiTest, BalloonWithoutDevice_IsRejected) {
    expect_fault(call("GET", "/balloon"), "no balloon device");
    expect_fault(call("PATCH", "/balloon", R"({"amount_mib": 1})"), "no balloon device");
    expect_ok(call("PUT", "/balloon", R"({"amount_mib": 1, "deflate_on_oom": true})"));
    expect_fault(call("GET", "/balloon/statistics"), "only available after");
}

TEST_F(FirecrackerApiTest, VersionAndMetrics_Answer) {
    auto version = json::parse(call("GET", "/version").body);
    EXPECT_EQ(version["firecracker_version"], std::string(FIRECRACKER_API_VERSION));
    EXPECT_EQ(version["kvmm_version"], "0.1.0");
    expect_fault(call("PUT", "/actions", R"({"action_type": "FlushMetrics"})"), "no metrics");
    std::string path = ::testing::TempDir() + "kvmm-api-test-metrics-" + std::to_string(::getpid());
    expect_ok(call("PUT", "/metrics", json { { "metrics_path", path } }.dump()));
    EXPECT_TRUE(controller.metrics_sink_open);
    expect_ok(call("PUT", "/actions", R"({"action_type": "FlushMetrics"})"));
    expect_fault(call("PUT", "/metrics", R"({"metrics_path": "/nonexistent-dir/m"})"), "/nonexistent-dir/m");
    ::unlink(path.c_str());
}

TEST(OpenObservabilitySink, FifoWithoutReaderFailsAndWithReaderOpens) {
    std::string path = ::testing::TempDir() + "kvmm-api-test-fifo-" + std::to_string(::getpid());
    ::unlink(path.c_str());
    ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
    auto no_reader = open_observability_sink(path);
    ASSERT_FALSE(no_reader);
    EXPECT_NE(no_reader.error().message().find("no reader"), std::string::npos);
    UniqueFd reader(::open(path.c_str(), O_RDONLY | O_NONBLOCK));
    ASSERT_TRUE(reader.is_valid());
    EXPECT_TRUE(open_observability_sink(path));
    ::unlink(path.c_str());
    auto directory = open_observability_sink("/");
    EXPECT_FALSE(directory);
}

} // namespace
} // namespace kvmm

namespace kvmm {
namespace {

// kvmm --control-sock: the VM came from flags, so the API starts out started.
TEST_F(FirecrackerApiTest, MarkStarted_ServesPostBootRequestsAndRefusesPreBootOnes) {
    InstanceConfig config;
    config.vm.kernel_path = "/flag-kernel";
    api.mark_started(config);
    EXPECT_TRUE(api.started());
    EXPECT_EQ(json::parse(call("GET", "/vm/config").body)["boot-source"]["kernel_image_path"], "/flag-kernel");
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "/k"})"), "after the microVM has started");
    expect_fault(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"), "already started");
    expect_ok(call("PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})"));
}

} // namespace
} // namespace kvmm

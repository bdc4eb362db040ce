#include "api/firecracker_api.h"

#include "api/fake_vmm_controller.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

namespace kvmm {
namespace {

using nlohmann::json;

// The API opens the files a request names (kernel, initrd, drive images), so each test runs in
// a fresh directory holding small files under the relative names its requests use.
class FirecrackerApiTest : public ::testing::Test {
protected:
    void SetUp() override {
        char directory_template[] = "/tmp/kvmm-api-test-XXXXXX";
        ASSERT_NE(::mkdtemp(directory_template), nullptr);
        m_directory = directory_template;
        ASSERT_EQ(::getcwd(m_previous_directory, sizeof(m_previous_directory)), m_previous_directory);
        ASSERT_EQ(::chdir(m_directory.c_str()), 0);
        for (char const* name : { "k", "i", "vmlinux", "rootfs.ext4", "d", "r", "s", "t", "c", "a" })
            create_file(name);
    }
    void TearDown() override {
        ASSERT_EQ(::chdir(m_previous_directory), 0);
        std::filesystem::remove_all(m_directory);
    }
    static void create_file(std::string const& name) {
        UniqueFd fd(::open(name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        ASSERT_TRUE(fd.is_valid()) << name;
        ASSERT_EQ(::ftruncate(fd.get(), 1 << 20), 0);
    }
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
    void configure_minimal() { expect_ok(call("PUT", "/boot-source", R"({"kernel_image_path": "k"})")); }
    void boot() {
        configure_minimal();
        expect_ok(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"));
    }

    FakeVmmController controller;
    FirecrackerApi api { controller, ApiIdentity { "vm0", "0.1.0" } };
    std::string m_directory;
    char m_previous_directory[4096] {};
};

TEST_F(FirecrackerApiTest, GoSdkBootSequence_StartsPausesAndResumes) {
    // The SDK creates the log file before it names it.
    std::string const log_path = "kvmm.log";
    create_file(log_path);
    expect_ok(call("PUT", "/logger", json { { "log_path", log_path }, { "level", "debug" } }.dump()));
    EXPECT_TRUE(controller.logger_sink_open);
    EXPECT_EQ(controller.logger->level, "Debug");

    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256, "smt": false})"));
    expect_ok(call("PUT", "/boot-source", R"({"kernel_image_path": "vmlinux", "boot_args": "console=ttyS0"})"));
    expect_ok(call("PUT", "/drives/rootfs",
                   R"({"drive_id": "rootfs", "path_on_host": "rootfs.ext4", "is_root_device": true,
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
    EXPECT_EQ(vm.kernel_path, "vmlinux");
    EXPECT_EQ(vm.cmdline, "console=ttyS0");
    ASSERT_EQ(vm.disks.size(), 1u);
    EXPECT_EQ(vm.disks[0].id, "rootfs");
    EXPECT_EQ(vm.disks[0].path, "rootfs.ext4");
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
}

TEST_F(FirecrackerApiTest, VmConfig_ReflectsEveryConfiguredResource) {
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 4, "mem_size_mib": 512, "huge_pages": "2M"})"));
    expect_ok(call("PUT", "/boot-source", R"({"kernel_image_path": "k", "initrd_path": "i"})"));
    expect_ok(call("PUT", "/drives/d1", R"({"drive_id": "d1", "path_on_host": "d", "is_root_device": false})"));
    expect_ok(call("PUT", "/vsock", R"({"guest_cid": 7, "uds_path": "/v.sock", "vsock_id": "vsock0"})"));
    expect_ok(call("PUT", "/entropy", R"({"rate_limiter": {"ops": {"size": 10, "refill_time": 1000}}})"));
    expect_ok(call("PUT", "/balloon", R"({"amount_mib": 64, "deflate_on_oom": true})"));
    auto response = call("GET", "/vm/config");
    expect_ok(response, 200);
    auto config = json::parse(response.body);
    EXPECT_EQ(config["machine-config"]["vcpu_count"], 4);
    EXPECT_EQ(config["machine-config"]["mem_size_mib"], 512);
    EXPECT_EQ(config["machine-config"]["huge_pages"], "2M");
    EXPECT_EQ(config["boot-source"]["initrd_path"], "i");
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

TEST_F(FirecrackerApiTest, DuplicateKeys_Are400NamingTheKeyAndChangeNothing) {
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "a", "kernel_image_path": "b"})"),
                 "duplicate key 'kernel_image_path'");
    // Nested: the same key in one rate limiter's bucket.
    expect_fault(call("PUT", "/network-interfaces/eth0",
                      R"({"iface_id": "eth0", "host_dev_name": "tap0",
                          "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "size": 9}}})"),
                 "duplicate key 'size'");
    // The same key in two different objects is not a duplicate.
    expect_ok(call("PUT", "/network-interfaces/eth0",
                   R"({"iface_id": "eth0", "host_dev_name": "tap0",
                       "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}},
                       "tx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}})"));
    EXPECT_EQ(json::parse(call("GET", "/vm/config").body)["boot-source"], nullptr);
}

TEST_F(FirecrackerApiTest, MalformedBodies_Are400NamingTheProblem) {
    expect_fault(call("PUT", "/boot-source", "{\"kernel_image_path\": "), "malformed JSON");
    expect_fault(call("PUT", "/boot-source", ""), "empty request body");
    expect_fault(call("PUT", "/boot-source", "[1]"), "expected a JSON object");
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": 5})"), "'kernel_image_path' must be a string");
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "k", "extra": 1})"), "unknown field 'extra'");
    expect_fault(call("PUT", "/drives/rootfs",
                      R"({"drive_id": "rootfs", "path_on_host": "r", "is_root_device": "yes"})"),
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
        { "PUT", "/boot-source", R"({"kernel_image_path": "k", "initrd_path": "/initrd\u001b[2J"})", "'initrd_path'" },
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
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "a", "is_root_device": false})"));
    boot();
    expect_fault(call("PATCH", "/drives/a", R"({"drive_id": "a", "path_on_host": "/etc/shadow\u0000.img"})"),
                 "'path_on_host'");
    EXPECT_EQ(api.config().instance.vm.disks[0].path, "a");
}

TEST_F(FirecrackerApiTest, DriveRules_IdsMatchAndOneRootDevice) {
    expect_fault(call("PUT", "/drives/a", R"({"drive_id": "b", "path_on_host": "r", "is_root_device": false})"),
                 "does not match");
    expect_fault(call("PUT", "/drives/a-b", R"({"drive_id": "a-b", "path_on_host": "r", "is_root_device": false})"),
                 "letters, digits");
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "r", "is_root_device": true})"));
    expect_fault(call("PUT", "/drives/b", R"({"drive_id": "b", "path_on_host": "s", "is_root_device": true})"),
                 "already the root device");
    // Replacing the root drive itself is fine and keeps one entry.
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "t", "is_root_device": true})"));
    EXPECT_EQ(api.config().instance.vm.disks.size(), 1u);
    EXPECT_EQ(api.config().instance.vm.disks[0].path, "t");
    expect_fault(call("PUT", "/drives/c", R"({"drive_id": "c", "path_on_host": "c", "is_root_device": false,
                                             "partuuid": "0eaa91a0-01"})"),
                 "partuuid");
    expect_fault(call("PUT", "/drives/c", R"({"drive_id": "c", "path_on_host": "c", "is_root_device": false,
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
             { "/boot-source", R"({"kernel_image_path": "k"})" },
             { "/drives/d", R"({"drive_id": "d", "path_on_host": "d", "is_root_device": false})" },
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
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "a", "is_root_device": false})"));
    expect_ok(call("PUT", "/network-interfaces/n", R"({"iface_id": "n", "host_dev_name": "tap1"})"));
    expect_ok(call("PUT", "/balloon", R"({"amount_mib": 10, "deflate_on_oom": false, "stats_polling_interval_s": 1})"));
    boot();
    expect_ok(call("PATCH", "/drives/a", R"({"drive_id": "a", "path_on_host": "/b"})"));
    EXPECT_EQ(api.config().instance.vm.disks[0].path, "/b");
    expect_fault(call("PATCH", "/drives/zz", R"({"drive_id": "zz", "path_on_host": "/b"})"), "does not exist");
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
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "a", "is_root_device": false,
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
    expect_fault(call("PATCH", "/balloon", R"({"amount_mib": 1})"), "only available after");
    boot();
    expect_fault(call("PATCH", "/balloon", R"({"amount_mib": 1})"), "no balloon device");
}

TEST_F(FirecrackerApiTest, BalloonBeforeBoot_IsConfiguredButNotUpdatedOrQueried) {
    expect_ok(call("PUT", "/balloon", R"({"amount_mib": 1, "deflate_on_oom": true, "stats_polling_interval_s": 1})"));
    expect_ok(call("GET", "/balloon"), 200);
    expect_fault(call("GET", "/balloon/statistics"), "only available after");
    expect_fault(call("PATCH", "/balloon", R"({"amount_mib": 2})"), "only available after");
    expect_fault(call("PATCH", "/balloon/statistics", R"({"stats_polling_interval_s": 2})"), "only available after");
    EXPECT_EQ(api.config().instance.vm.balloon->target_mib, 1u);
    EXPECT_EQ(api.config().instance.vm.balloon->stats_polling_interval_s, 1u);
    EXPECT_TRUE(controller.calls.empty());
}

// Firecracker: the balloon may not exceed guest memory, whether set before boot, left behind by
// a smaller machine-config, or asked for after boot (where it would ask the guest to give up
// more than it has).
TEST_F(FirecrackerApiTest, BalloonLargerThanGuestMemory_IsRefusedBeforeAndAfterBoot) {
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 256})"));
    expect_fault(call("PUT", "/balloon", R"({"amount_mib": 257, "deflate_on_oom": false})"), "larger than the guest");
    EXPECT_FALSE(api.config().instance.vm.balloon);
    expect_ok(call("PUT", "/balloon", R"({"amount_mib": 256, "deflate_on_oom": false})"));
    expect_ok(call("PUT", "/balloon", R"({"amount_mib": 200, "deflate_on_oom": false})"));
    expect_fault(call("PATCH", "/machine-config", R"({"mem_size_mib": 199})"), "larger than the guest");
    expect_fault(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128})"), "larger than the guest");
    EXPECT_EQ(api.config().instance.vm.memory_size, 256ull << 20);
    expect_ok(call("PATCH", "/machine-config", R"({"mem_size_mib": 200})"));
    boot();
    expect_fault(call("PATCH", "/balloon", R"({"amount_mib": 201})"), "larger than the guest");
    EXPECT_EQ(controller.balloon_target_mib, 0u) << "the device must not be asked";
    EXPECT_EQ(api.config().instance.vm.balloon->target_mib, 200u);
    expect_ok(call("PATCH", "/balloon", R"({"amount_mib": 100})"));
    EXPECT_EQ(controller.balloon_target_mib, 100u);
}

TEST_F(FirecrackerApiTest, FlushMetricsBeforeBoot_IsRefused) {
    create_file("metrics");
    expect_ok(call("PUT", "/metrics", R"({"metrics_path": "metrics"})"));
    expect_fault(call("PUT", "/actions", R"({"action_type": "FlushMetrics"})"), "only available after");
    EXPECT_EQ(std::count(controller.calls.begin(), controller.calls.end(), "flush_metrics"), 0);
}

// firectl names its root drive "1" and the Go SDK numbers network interfaces from "1".
TEST_F(FirecrackerApiTest, DriveAndNetworkInterface_MayShareAnId) {
    expect_ok(call("PUT", "/drives/1", R"({"drive_id": "1", "path_on_host": "r", "is_root_device": true})"));
    expect_ok(call("PUT", "/network-interfaces/1", R"({"iface_id": "1", "host_dev_name": "tap0"})"));
    boot();
    ASSERT_TRUE(controller.started_with);
    ASSERT_EQ(controller.started_with->vm.disks.size(), 1u);
    ASSERT_EQ(controller.started_with->vm.nets.size(), 1u);
    EXPECT_EQ(controller.started_with->vm.disks[0].id, "1");
    EXPECT_EQ(controller.started_with->vm.nets[0].id, "1");
}

TEST_F(FirecrackerApiTest, Smt_IsAcceptedWithOneOrAnEvenNumberOfVcpus) {
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 128, "smt": true})"));
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128, "smt": true})"));
    expect_fault(call("PATCH", "/machine-config", R"({"vcpu_count": 3})"), "1 or even");
    expect_ok(call("PATCH", "/machine-config", R"({"vcpu_count": 4})"));
    EXPECT_EQ(json::parse(call("GET", "/machine-config").body)["smt"], true);
    boot();
    ASSERT_TRUE(controller.started_with);
    EXPECT_TRUE(controller.started_with->machine.smt);
    EXPECT_EQ(controller.started_with->vm.vcpu_count, 4u);
}

TEST_F(FirecrackerApiTest, Logger_TakesExistingFilesAndFifosWithoutReaderButCreatesNothing) {
    expect_fault(call("PUT", "/logger", R"({"log_path": "missing.log"})"), "missing.log");
    struct stat status {};
    EXPECT_NE(::stat("missing.log", &status), 0) << "the log file must not be created";
    EXPECT_FALSE(controller.logger);
    ASSERT_EQ(::mkfifo("log.fifo", 0600), 0);
    expect_ok(call("PUT", "/logger", R"({"log_path": "log.fifo", "level": "Warning"})"));
    EXPECT_TRUE(controller.logger_sink_open);
    create_file("kvmm.log");
    expect_ok(call("PUT", "/logger", R"({"log_path": "kvmm.log", "show_level": true})"));
    EXPECT_EQ(json::parse(call("GET", "/vm/config").body)["logger"]["log_path"], "kvmm.log");
    ASSERT_EQ(::mkfifo("metrics.fifo", 0600), 0);
    expect_ok(call("PUT", "/metrics", R"({"metrics_path": "metrics.fifo"})"));
}

// Firecracker opens what a PUT names while handling it: a wrong path is that request's 400 and
// the configuration stays as it was.
TEST_F(FirecrackerApiTest, PathsThatCannotBeOpened_Are400AtThePutAndKeepThePreviousConfig) {
    expect_ok(call("PUT", "/boot-source", R"({"kernel_image_path": "k", "initrd_path": "i"})"));
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "missing-kernel"})"), "missing-kernel");
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "k", "initrd_path": "missing-initrd"})"),
                 "missing-initrd");
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "/"})"), "not a regular file");
    // A FIFO is refused without being opened (its open would wait for a writer).
    ASSERT_EQ(::mkfifo("kernel.fifo", 0600), 0);
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "kernel.fifo"})"), "not a regular file");
    EXPECT_EQ(api.config().instance.vm.kernel_path, "k");
    EXPECT_EQ(api.config().instance.vm.initrd_path, "i");

    expect_ok(call("PUT", "/drives/root", R"({"drive_id": "root", "path_on_host": "r", "is_root_device": true})"));
    expect_fault(call("PUT", "/drives/root",
                      R"({"drive_id": "root", "path_on_host": "missing.img", "is_root_device": true})"),
                 "missing.img");
    expect_fault(call("PUT", "/drives/root",
                      R"({"drive_id": "root", "path_on_host": "/dev/null", "is_root_device": true})"),
                 "not a regular file or a block device");
    expect_fault(call("PUT", "/drives/root",
                      R"({"drive_id": "root", "path_on_host": "/proc/self/mem", "is_root_device": true})"),
                 "kernel files cannot back a disk");
    // Another VM holding the image: its lock is taken.
    UniqueFd holder(::open("s", O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(holder.is_valid());
    ASSERT_EQ(::flock(holder.get(), LOCK_EX | LOCK_NB), 0);
    expect_fault(call("PUT", "/drives/root", R"({"drive_id": "root", "path_on_host": "s", "is_root_device": true})"),
                 "locked");
    ASSERT_EQ(api.config().instance.vm.disks.size(), 1u);
    EXPECT_EQ(api.config().instance.vm.disks[0].path, "r");

    expect_ok(call("PUT", "/vsock", R"({"guest_cid": 3, "uds_path": "v.sock"})"));
    expect_fault(call("PUT", "/vsock", R"({"guest_cid": 4, "uds_path": "missing-dir/v.sock"})"), "missing-dir");
    expect_fault(call("PUT", "/vsock", R"({"guest_cid": 4, "uds_path": "k/v.sock"})"), "not a directory");
    EXPECT_EQ(api.config().instance.vm.vsock->guest_cid, 3u);
    // The lock is not kept: the image is the VMM's to open at InstanceStart.
    UniqueFd again(::open("r", O_RDWR | O_CLOEXEC));
    EXPECT_EQ(::flock(again.get(), LOCK_EX | LOCK_NB), 0);
}

TEST_F(FirecrackerApiTest, PatchDriveWithOnlyItsId_Is400) {
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "a", "is_root_device": false})"));
    boot();
    expect_fault(call("PATCH", "/drives/a", R"({"drive_id": "a"})"), "changes nothing");
    EXPECT_EQ(std::count(controller.calls.begin(), controller.calls.end(), "update_drive a"), 0);
}

TEST_F(FirecrackerApiTest, PatchDriveToAKernelFileOrDevice_Is400AndNeverReachesTheMachine) {
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "a", "is_root_device": false})"));
    boot();
    expect_fault(call("PATCH", "/drives/a", R"({"drive_id": "a", "path_on_host": "/proc/self/mem"})"),
                 "kernel files cannot back a disk");
    expect_fault(call("PATCH", "/drives/a", R"({"drive_id": "a", "path_on_host": "/sys/kernel/notes"})"),
                 "kernel files cannot back a disk");
    expect_fault(call("PATCH", "/drives/a", R"({"drive_id": "a", "path_on_host": "/dev/zero"})"),
                 "not a regular file or a block device");
    EXPECT_EQ(std::count(controller.calls.begin(), controller.calls.end(), "update_drive a"), 0);
    EXPECT_EQ(api.config().instance.vm.disks[0].path, "a");
}

TEST_F(FirecrackerApiTest, GetWithABody_Is400) {
    expect_fault(call("GET", "/", "{}"), "GET request cannot have a body");
    expect_fault(call("GET", "/machine-config", R"({"vcpu_count": 1})"), "GET request cannot have a body");
    expect_ok(call("GET", "/machine-config"), 200);
}

TEST_F(FirecrackerApiTest, DeprecatedFields_GetADeprecationHeader) {
    auto has_deprecation = [](HttpResponse const& response) {
        return std::find(response.headers.begin(), response.headers.end(),
                         std::pair<std::string, std::string> { "Deprecation", "true" }) != response.headers.end();
    };
    auto with_template =
        call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "None"})");
    expect_ok(with_template);
    EXPECT_TRUE(has_deprecation(with_template));
    EXPECT_TRUE(has_deprecation(call("PATCH", "/machine-config", R"({"cpu_template": "None"})")));
    // Refused for another reason, the request still used the deprecated field.
    auto refused = call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "T2"})");
    EXPECT_EQ(refused.status, 400);
    EXPECT_TRUE(has_deprecation(refused));
    auto with_vsock_id = call("PUT", "/vsock", R"({"vsock_id": "v", "guest_cid": 3, "uds_path": "v.sock"})");
    expect_ok(with_vsock_id);
    EXPECT_TRUE(has_deprecation(with_vsock_id));
    EXPECT_FALSE(has_deprecation(call("PUT", "/vsock", R"({"guest_cid": 3, "uds_path": "v.sock"})")));
    EXPECT_FALSE(has_deprecation(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128})")));
    EXPECT_NE(serialize_response(with_vsock_id, true).find("\r\nDeprecation: true\r\n"), std::string::npos);
}

TEST_F(FirecrackerApiTest, GuestMac_MulticastAndLocallyAdministeredAreAccepted) {
    expect_ok(call("PUT", "/network-interfaces/a", R"({"iface_id": "a", "host_dev_name": "tap0",
                                                      "guest_mac": "01:00:5e:00:00:01"})"));
    expect_ok(call("PUT", "/network-interfaces/b", R"({"iface_id": "b", "host_dev_name": "tap1",
                                                      "guest_mac": "06:00:AC:10:00:02"})"));
    auto const& nets = api.config().instance.vm.nets;
    ASSERT_EQ(nets.size(), 2u);
    EXPECT_EQ(nets[0].mac, (MacAddress { 0x01, 0x00, 0x5e, 0, 0, 1 }));
    EXPECT_EQ(nets[1].mac, (MacAddress { 0x06, 0x00, 0xac, 0x10, 0, 2 }));
    for (auto const* bad : { "01:00:5e:00:00", "01-00-5e-00-00-01", "01:00:5e:00:00:0g", "01:00:5e:00:00:+1" })
        expect_fault(call("PUT", "/network-interfaces/c",
                          json { { "iface_id", "c" }, { "host_dev_name", "tap2" }, { "guest_mac", bad } }.dump()),
                     "guest_mac");
}

TEST_F(FirecrackerApiTest, VmConfig_EchoesCacheTypeAndOneTimeBurstAsSent) {
    expect_ok(call("PUT", "/drives/a", R"({"drive_id": "a", "path_on_host": "a", "is_root_device": false,
                                          "cache_type": "Writeback",
                                          "rate_limiter": {"bandwidth": {"size": 1000, "one_time_burst": 500,
                                                                         "refill_time": 100},
                                                           "ops": {"size": 10, "refill_time": 100}}})"));
    expect_ok(call("PUT", "/drives/b", R"({"drive_id": "b", "path_on_host": "r", "is_root_device": false})"));
    auto const config = json::parse(call("GET", "/vm/config").body);
    EXPECT_EQ(config["drives"][0]["cache_type"], "Writeback");
    EXPECT_EQ(config["drives"][0]["rate_limiter"]["bandwidth"]["one_time_burst"], 500);
    EXPECT_TRUE(config["drives"][0]["rate_limiter"]["ops"]["one_time_burst"].is_null());
    EXPECT_EQ(config["drives"][1]["cache_type"], "Unsafe");
}

TEST_F(FirecrackerApiTest, Version_HasFirecrackersField) {
    auto const version = json::parse(call("GET", "/version").body);
    ASSERT_TRUE(version.contains("firecracker_version"));
    EXPECT_EQ(version["firecracker_version"], "1.12.0");
}

TEST_F(FirecrackerApiTest, VersionAndMetrics_Answer) {
    auto version = json::parse(call("GET", "/version").body);
    EXPECT_EQ(version["firecracker_version"], std::string(FIRECRACKER_API_VERSION));
    EXPECT_EQ(version["kvmm_version"], "0.1.0");
    expect_fault(call("PUT", "/metrics", R"({"metrics_path": "/nonexistent-dir/m"})"), "/nonexistent-dir/m");
    create_file("metrics");
    expect_ok(call("PUT", "/metrics", R"({"metrics_path": "metrics"})"));
    EXPECT_TRUE(controller.metrics_sink_open);
    boot();
    expect_ok(call("PUT", "/actions", R"({"action_type": "FlushMetrics"})"));
}

// Firecracker's users (the Go SDK, its own tests) create the FIFO and attach the reader after
// the PUT; the open must neither fail nor wait, and what is written meanwhile must reach the
// reader once it comes.
TEST(OpenObservabilitySink, FifoWithoutReaderOpensAndKeepsWhatIsWrittenForTheReader) {
    std::string path = ::testing::TempDir() + "kvmm-api-test-fifo-" + std::to_string(::getpid());
    ::unlink(path.c_str());
    ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
    auto sink = open_observability_sink(path);
    ASSERT_TRUE(sink) << sink.error().message();
    ASSERT_EQ(::write(sink->get(), "line\n", 5), 5);
    UniqueFd reader(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    ASSERT_TRUE(reader.is_valid());
    char text[8] {};
    EXPECT_EQ(::read(reader.get(), text, sizeof(text)), 5);
    EXPECT_STREQ(text, "line\n");
    ::unlink(path.c_str());
}

TEST(OpenObservabilitySink, MissingFileIsAnErrorUnlessCreationIsAsked) {
    std::string path = ::testing::TempDir() + "kvmm-api-test-missing-" + std::to_string(::getpid());
    ::unlink(path.c_str());
    auto missing = open_observability_sink(path);
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find(path), std::string::npos) << missing.error().message();
    struct stat status {};
    EXPECT_NE(::stat(path.c_str(), &status), 0) << "the open must not create the file";
    ASSERT_TRUE(open_observability_sink(path, SinkCreation::CreateIfMissing));
    ASSERT_EQ(::stat(path.c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 0777, 0600u);
    ::unlink(path.c_str());
    EXPECT_FALSE(open_observability_sink("/"));
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
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "k"})"), "after the microVM has started");
    expect_fault(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"), "already started");
    expect_ok(call("PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})"));
}

TEST_F(FirecrackerApiTest, SnapshotCreate_OnlyWhilePausedAndCarriesTheConfiguration) {
    expect_fault(call("PUT", "/snapshot/create", R"({"snapshot_path": "s.snap", "mem_file_path": "s.mem"})"),
                 "only available after the microVM has started");
    create_file("m.log");
    expect_ok(call("PUT", "/metrics", R"({"metrics_path": "m.log"})"));
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256})"));
    boot();
    expect_fault(call("PUT", "/snapshot/create", R"({"snapshot_path": "s.snap", "mem_file_path": "s.mem"})"),
                 "must be paused");
    EXPECT_TRUE(std::find(controller.calls.begin(), controller.calls.end(), "create_snapshot") ==
                controller.calls.end());
    expect_ok(call("PATCH", "/vm", R"({"state": "Paused"})"));
    expect_ok(call("PUT", "/snapshot/create",
                   R"({"snapshot_type": "Full", "snapshot_path": "s.snap", "mem_file_path": "s.mem"})"));
    EXPECT_EQ(controller.snapshot_paths, (std::pair<std::string, std::string> { "s.snap", "s.mem" }));
    auto const carried = json::parse(controller.snapshot_config_json);
    EXPECT_EQ(carried["machine-config"]["vcpu_count"], 2);
    EXPECT_EQ(carried["machine-config"]["mem_size_mib"], 256);
    EXPECT_EQ(carried["boot-source"]["kernel_image_path"], "k");
    EXPECT_TRUE(carried["metrics"].is_null()) << "the metrics sink is this process's, not the machine's";
}

TEST_F(FirecrackerApiTest, SnapshotCreate_BadBodiesAreRefusedNamingTheField) {
    boot();
    expect_ok(call("PATCH", "/vm", R"({"state": "Paused"})"));
    expect_fault(call("PUT", "/snapshot/create",
                      R"({"snapshot_type": "Diff", "snapshot_path": "s.snap", "mem_file_path": "s.mem"})"),
                 "a Diff snapshot needs dirty page tracking");
    EXPECT_TRUE(std::find(controller.calls.begin(), controller.calls.end(), "create_snapshot") ==
                controller.calls.end());
    expect_fault(call("PUT", "/snapshot/create",
                      R"({"snapshot_type": "Half", "snapshot_path": "s.snap", "mem_file_path": "s.mem"})"),
                 "snapshot_type");
    expect_fault(call("PUT", "/snapshot/create", R"({"snapshot_path": "s.snap"})"), "mem_file_path");
    expect_fault(call("PUT", "/snapshot/create", R"({"snapshot_path": "s", "mem_file_path": "s"})"), "different");
    expect_fault(call("PUT", "/snapshot/create", R"({"snapshot_path": "s", "mem_file_path": "m", "version": "1"})"),
                 "version");
    expect_fault(call("PUT", "/snapshot/create",
                      json { { "snapshot_path", std::string("a\nb") }, { "mem_file_path", "m" } }.dump()),
                 "snapshot_path");
    expect_fault(call("PUT", "/snapshot/other", "{}"), "Invalid request method and/or path");
}

TEST_F(FirecrackerApiTest, SnapshotCreate_DiffWithDirtyPageTrackingFromMachineConfig) {
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128, "track_dirty_pages": true})"));
    boot();
    expect_ok(call("PATCH", "/vm", R"({"state": "Paused"})"));
    expect_ok(call("PUT", "/snapshot/create",
                   R"({"snapshot_type": "Diff", "snapshot_path": "d.snap", "mem_file_path": "d.mem"})"));
    EXPECT_EQ(controller.snapshot_type, SnapshotCreateType::Diff);
    expect_ok(call("PUT", "/snapshot/create", R"({"snapshot_path": "f.snap", "mem_file_path": "f.mem"})"));
    EXPECT_EQ(controller.snapshot_type, SnapshotCreateType::Full);
}

// Firecracker: the load's track_dirty_pages (or the older enable_diff_snapshots) decides for the
// loaded microVM, whatever the snapshotted machine had.
TEST_F(FirecrackerApiTest, SnapshotLoad_TrackDirtyPagesDecidesWhetherDiffsCanBeTaken) {
    controller.snapshot_config_json =
        R"({"boot-source": {"kernel_image_path": "k"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "track_dirty_pages": true}})";
    expect_ok(call("PUT", "/snapshot/load", R"({"snapshot_path": "s", "mem_file_path": "m"})"));
    ASSERT_TRUE(controller.started_with);
    EXPECT_FALSE(controller.started_with->machine.track_dirty_pages);
    expect_fault(call("PUT", "/snapshot/create",
                      R"({"snapshot_type": "Diff", "snapshot_path": "d.snap", "mem_file_path": "d.mem"})"),
                 "needs dirty page tracking");

    for (std::string_view key : { "track_dirty_pages", "enable_diff_snapshots" }) {
        SCOPED_TRACE(key);
        FakeVmmController other_controller;
        FirecrackerApi other { other_controller, ApiIdentity { "vm1", "0.1.0" } };
        auto put = [&](std::string target, std::string body) {
            HttpRequest request;
            request.method = "PUT";
            request.target = std::move(target);
            request.body = std::move(body);
            return other.handle(request);
        };
        other_controller.snapshot_config_json = R"({"boot-source": {"kernel_image_path": "k"}})";
        expect_ok(
            put("/snapshot/load", fmt::format(R"({{"snapshot_path": "s", "mem_file_path": "m", "{}": true}})", key)));
        ASSERT_TRUE(other_controller.started_with);
        EXPECT_TRUE(other_controller.started_with->machine.track_dirty_pages);
        expect_ok(put("/snapshot/create", R"({"snapshot_type": "Diff", "snapshot_path": "d", "mem_file_path": "e"})"));
        EXPECT_EQ(other_controller.snapshot_type, SnapshotCreateType::Diff);
    }
}

TEST_F(FirecrackerApiTest, SnapshotLoad_TakesTheSnapshotsConfigurationWithNetworkOverrides) {
    controller.snapshot_config_json =
        R"({"boot-source": {"kernel_image_path": "/gone/vmlinux"}, "machine-config": {"vcpu_count": 2, "mem_size_mib": 128},
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap-old"}]})";
    create_file("k.log");
    expect_ok(call("PUT", "/logger", R"({"log_path": "k.log"})")); // allowed before a load
    auto const response =
        call("PUT", "/snapshot/load",
             R"({"snapshot_path": "s.snap", "mem_backend": {"backend_type": "File", "backend_path": "s.mem"},
                                   "resume_vm": true, "enable_diff_snapshots": false,
                                   "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap-new"}]})");
    expect_ok(response);
    ASSERT_TRUE(controller.loaded);
    EXPECT_EQ(controller.loaded->snapshot_path, "s.snap");
    EXPECT_EQ(controller.loaded->memory_file_path, "s.mem");
    EXPECT_TRUE(controller.loaded->resume_vm);
    ASSERT_TRUE(controller.started_with);
    EXPECT_EQ(controller.started_with->vm.vcpu_count, 2u);
    ASSERT_EQ(controller.started_with->vm.nets.size(), 1u);
    EXPECT_EQ(controller.started_with->vm.nets[0].tap_name, "tap-new");
    EXPECT_EQ(state(), "Running");
    auto const config = json::parse(call("GET", "/vm/config").body);
    EXPECT_EQ(config["machine-config"]["vcpu_count"], 2);
    EXPECT_EQ(config["logger"]["log_path"], "k.log");
    // The loaded microVM is started: no second load, no pre-boot configuration.
    expect_fault(call("PUT", "/snapshot/load", R"({"snapshot_path": "s", "mem_file_path": "m"})"), "already started");
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "k"})"), "after the microVM has started");
}

TEST_F(FirecrackerApiTest, SnapshotLoad_DeprecatedMemFilePathLoadsPausedWithTheHeader) {
    controller.snapshot_config_json = R"({"boot-source": {"kernel_image_path": "k"}})";
    auto const response = call("PUT", "/snapshot/load", R"({"snapshot_path": "s.snap", "mem_file_path": "s.mem"})");
    expect_ok(response);
    EXPECT_TRUE(std::find(response.headers.begin(), response.headers.end(),
                          std::pair<std::string, std::string> { "Deprecation", "true" }) != response.headers.end());
    EXPECT_EQ(controller.loaded->memory_file_path, "s.mem");
    EXPECT_EQ(state(), "Paused");
}

TEST_F(FirecrackerApiTest, SnapshotLoad_AfterConfigurationIsRefused) {
    expect_ok(call("PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128})"));
    expect_fault(call("PUT", "/snapshot/load", R"({"snapshot_path": "s", "mem_file_path": "m"})"),
                 "Loading a microVM snapshot not allowed after configuring boot-specific resources.");
    EXPECT_FALSE(controller.loaded);
}

TEST_F(FirecrackerApiTest, SnapshotLoad_AFailedConfigurationRequestStillAllowsALoad) {
    expect_fault(call("PUT", "/boot-source", R"({"kernel_image_path": "missing"})"), "missing");
    controller.snapshot_config_json = R"({"boot-source": {"kernel_image_path": "k"}})";
    expect_ok(call("PUT", "/snapshot/load", R"({"snapshot_path": "s", "mem_file_path": "m"})"));
}

TEST_F(FirecrackerApiTest, SnapshotLoad_BadBodiesAreRefusedNamingTheProblem) {
    auto const load = [&](std::string const& body) { return call("PUT", "/snapshot/load", body); };
    expect_fault(load(R"({"snapshot_path": "s"})"), "either `mem_backend` or `mem_file_path` is required");
    expect_fault(load(R"({"snapshot_path": "s", "mem_file_path": "m",
                          "mem_backend": {"backend_type": "File", "backend_path": "m"}})"),
                 "too many fields");
    expect_fault(load(R"({"snapshot_path": "s", "mem_backend": {"backend_type": "Uffd", "backend_path": "u.sock"}})"),
                 "Uffd is not supported yet");
    expect_fault(load(R"({"snapshot_path": "s", "mem_backend": {"backend_type": "Ram", "backend_path": "m"}})"),
                 "backend_type");
    expect_fault(load(R"({"snapshot_path": "s", "mem_file_path": "m", "track_dirty_pages": "yes"})"),
                 "track_dirty_pages");
    expect_fault(load(R"({"snapshot_path": "s", "mem_file_path": "m", "network_overrides": {}})"),
                 "network_overrides must be an array");
    expect_fault(load(R"({"snapshot_path": "s", "mem_file_path": "m", "surprise": 1})"), "surprise");
    expect_fault(load(R"({"mem_file_path": "m"})"), "snapshot_path");
    EXPECT_FALSE(controller.loaded);
    // An override naming an interface the snapshot lacks, and a failing load, leave the API
    // where it was: not started, still able to load.
    controller.snapshot_config_json = R"({"boot-source": {"kernel_image_path": "k"}})";
    expect_fault(load(R"({"snapshot_path": "s", "mem_file_path": "m",
                          "network_overrides": [{"iface_id": "eth9", "host_dev_name": "tap0"}]})"),
                 "no network interface 'eth9'");
    controller.fail_next = true;
    expect_fault(load(R"({"snapshot_path": "s", "mem_file_path": "m"})"), "controller refused");
    EXPECT_EQ(state(), "Not started");
    expect_ok(load(R"({"snapshot_path": "s", "mem_file_path": "m"})"));
}

} // namespace
} // namespace kvmm

#include "config/microvm_config.h"

#include "config/resource_parsers.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

TEST(LoadConfigFile, FirecrackerLayout_ProducesVmConfig) {
    auto config = load_config_file(R"({
        "boot-source": {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0 reboot=k"},
        "drives": [{"drive_id": "rootfs", "path_on_host": "/rootfs.ext4", "is_root_device": true,
                    "is_read_only": true}],
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024},
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}],
        "vsock": {"guest_cid": 3, "uds_path": "/tmp/v.sock"},
        "entropy": {},
        "balloon": {"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1},
        "logger": {"log_path": "/tmp/log", "level": "Warning"},
        "metrics": {"metrics_path": "/tmp/metrics"}
    })");
    ASSERT_TRUE(config) << config.error().message();
    VmConfig const& vm = config->instance.vm;
    EXPECT_EQ(vm.kernel_path, "/vmlinux");
    EXPECT_EQ(vm.cmdline, "console=ttyS0 reboot=k");
    EXPECT_EQ(vm.vcpu_count, 2u);
    EXPECT_EQ(vm.memory_size, 1024ull << 20);
    ASSERT_EQ(vm.disks.size(), 1u);
    EXPECT_TRUE(vm.disks[0].read_only);
    ASSERT_EQ(vm.nets.size(), 1u);
    EXPECT_EQ(format_mac_address(*vm.nets[0].mac), "06:00:ac:10:00:02");
    ASSERT_TRUE(vm.vsock);
    EXPECT_EQ(vm.vsock->uds_path, "/tmp/v.sock");
    EXPECT_TRUE(vm.rng);
    ASSERT_TRUE(vm.balloon);
    EXPECT_EQ(vm.balloon->stats_polling_interval_s, 1u);
    ASSERT_TRUE(config->logger);
    EXPECT_EQ(config->logger->level, "Warning");
    ASSERT_TRUE(config->metrics);
    EXPECT_EQ(config->metrics->metrics_path, "/tmp/metrics");
}

TEST(LoadConfigFile, ErrorsNameTheSectionAndField) {
    struct Case {
        char const* text;
        char const* fragment;
    } cases[] = {
        { "{", "malformed JSON" },
        { "{}", "boot-source" },
        { R"({"boot-source": {"kernel_image_path": "/k"}, "drives": {}})", "'drives' must be an array" },
        { R"({"boot-source": {"kernel_image_path": "/k"}, "drives": [{"drive_id": "r", "is_root_device": true}]})",
          "path_on_host" },
        { R"({"boot-source": {"kernel_image_path": "/k"}, "unknown": 1})", "unknown field 'unknown'" },
        { R"({"boot-source": {"kernel_image_path": "/k"}, "boot-source": {"kernel_image_path": "/other"}})",
          "duplicate key 'boot-source'" },
        { R"({"boot-source": {"kernel_image_path": "/k", "boot_args": "a", "boot_args": "b"}})",
          "duplicate key 'boot_args'" },
        { R"({"boot-source": {"kernel_image_path": "/k"}, "mmds-config": {}})", "mmds-config" },
        { R"({"boot-source": {"kernel_image_path": "/k"},
              "network-interfaces": [{"iface_id": "a", "host_dev_name": "tap0"},
                                     {"iface_id": "b", "host_dev_name": "tap0"}]})",
          "already used" },
    };
    for (auto const& c : cases) {
        auto config = load_config_file(c.text);
        ASSERT_FALSE(config) << c.text;
        EXPECT_NE(config.error().message().find(c.fragment), std::string::npos) << config.error().message();
    }
}

TEST(LoadConfigFile, PathsWithControlCharacters_AreRefusedNamingTheField) {
    struct Case {
        char const* text;
        char const* field;
    } cases[] = {
        { R"({"boot-source": {"kernel_image_path": "/k\u0000x"}})", "'kernel_image_path'" },
        { R"({"boot-source": {"kernel_image_path": "/k", "initrd_path": "/i\u0001"}})", "'initrd_path'" },
        { R"({"boot-source": {"kernel_image_path": "/k"},
              "drives": [{"drive_id": "r", "path_on_host": "/etc/shadow\u0000.img", "is_root_device": true}]})",
          "'path_on_host'" },
        { R"({"boot-source": {"kernel_image_path": "/k"},
              "network-interfaces": [{"iface_id": "a", "host_dev_name": "tap\u00000"}]})",
          "'host_dev_name'" },
        { R"({"boot-source": {"kernel_image_path": "/k"}, "vsock": {"guest_cid": 3, "uds_path": "/v\r"}})",
          "'uds_path'" },
        { R"({"boot-source": {"kernel_image_path": "/k"}, "logger": {"log_path": "/l\u0000"}})", "'log_path'" },
        { R"({"boot-source": {"kernel_image_path": "/k"}, "metrics": {"metrics_path": "/m\u001f"}})",
          "'metrics_path'" },
    };
    for (auto const& c : cases) {
        auto config = load_config_file(c.text);
        ASSERT_FALSE(config) << c.text;
        EXPECT_NE(config.error().message().find(c.field), std::string::npos) << config.error().message();
        EXPECT_NE(config.error().message().find("control character"), std::string::npos) << config.error().message();
    }
}

TEST(MicrovmConfigJson, RoundTripsThroughTheConfigFileLoader) {
    auto original = load_config_file(R"({
        "boot-source": {"kernel_image_path": "/vmlinux", "initrd_path": "/initrd", "boot_args": "quiet"},
        "drives": [{"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true, "io_engine": "Async",
                    "rate_limiter": {"bandwidth": {"size": 1, "one_time_burst": 2, "refill_time": 3}}},
                   {"drive_id": "data", "path_on_host": "/d", "is_root_device": false, "format": "qcow2"}],
        "machine-config": {"vcpu_count": 3, "mem_size_mib": 300, "track_dirty_pages": true},
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                "rx_rate_limiter": {"ops": {"size": 4, "refill_time": 5}}}],
        "balloon": {"amount_mib": 8, "deflate_on_oom": true}
    })");
    ASSERT_TRUE(original) << original.error().message();
    auto dumped = microvm_config_to_json(*original).dump();
    auto reloaded = load_config_file(dumped);
    ASSERT_TRUE(reloaded) << reloaded.error().message() << "\n" << dumped;
    EXPECT_EQ(reloaded->instance.vm.disks, original->instance.vm.disks);
    EXPECT_EQ(reloaded->instance.vm.nets, original->instance.vm.nets);
    EXPECT_EQ(reloaded->instance.vm.balloon, original->instance.vm.balloon);
    EXPECT_EQ(reloaded->instance.machine, original->instance.machine);
    EXPECT_EQ(reloaded->instance.vm.initrd_path, original->instance.vm.initrd_path);
    EXPECT_EQ(reloaded->instance.vm.memory_size, 300ull << 20);
    EXPECT_EQ(reloaded->drive_cache_types, original->drive_cache_types);
}

TEST(MicrovmConfigJson, EchoesTheCacheTypeSentAndWritebackForFlagModeDrives) {
    auto loaded = load_config_file(R"({
        "boot-source": {"kernel_image_path": "/vmlinux"},
        "drives": [{"drive_id": "a", "path_on_host": "/a", "is_root_device": false, "cache_type": "Writeback"},
                   {"drive_id": "b", "path_on_host": "/b", "is_root_device": false}]
    })");
    ASSERT_TRUE(loaded) << loaded.error().message();
    auto dumped = microvm_config_to_json(*loaded);
    EXPECT_EQ(dumped["drives"][0]["cache_type"], "Writeback");
    EXPECT_EQ(dumped["drives"][1]["cache_type"], "Unsafe");
    // A drive from kvmm's own flags (no cache_type was ever sent) reports kvmm's real mode.
    MicrovmConfig flags;
    DiskConfig disk;
    disk.id = "flag";
    disk.path = "/f";
    flags.instance.vm.disks.push_back(disk);
    EXPECT_EQ(microvm_config_to_json(flags)["drives"][0]["cache_type"], "Writeback");
}

TEST(LoadConfigFile, BalloonLargerThanGuestMemoryIsRefused) {
    auto refused = load_config_file(R"({"boot-source": {"kernel_image_path": "/vmlinux"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "balloon": {"amount_mib": 65, "deflate_on_oom": false}})");
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("larger than the guest memory"), std::string::npos)
        << refused.error().message();
    EXPECT_TRUE(load_config_file(R"({"boot-source": {"kernel_image_path": "/vmlinux"},
        "balloon": {"amount_mib": 128, "deflate_on_oom": false}})"))
        << "the default 128 MiB of memory";
}

TEST(ParseMacAddress, RejectsMalformedText) {
    EXPECT_TRUE(parse_mac_address("00:11:22:33:44:55"));
    EXPECT_FALSE(parse_mac_address("00:11:22:33:44"));
    EXPECT_FALSE(parse_mac_address("00-11-22-33-44-55"));
    EXPECT_FALSE(parse_mac_address("00:11:22:33:44:5g"));
    EXPECT_FALSE(parse_mac_address("00:11:22:33:44:+5"));
}

TEST(LoadConfigFile, InterfacesSharingAMac_AreRefused) {
    auto config = load_config_file(R"({"boot-source": {"kernel_image_path": "/k"},
        "network-interfaces": [{"iface_id": "a", "host_dev_name": "tap0", "guest_mac": "02:00:00:00:00:01"},
                               {"iface_id": "b", "host_dev_name": "tap1", "guest_mac": "02:00:00:00:00:01"}]})");
    ASSERT_FALSE(config);
    EXPECT_NE(config.error().message().find("already used by 'a'"), std::string::npos) << config.error().message();
}

TEST(PutNetworkInterface, ReplacingAnInterfaceKeepsItsOwnTapAndMac) {
    MicrovmConfig config;
    NetConfig net;
    net.id = "a";
    net.tap_name = "tap0";
    net.mac = MacAddress { 0x02, 0, 0, 0, 0, 1 };
    ASSERT_TRUE(put_network_interface(config, net));
    net.rx_rate_limit.bandwidth = TokenBucketConfig { 1000, 0, 1000 };
    auto const replaced = put_network_interface(config, net);
    EXPECT_TRUE(replaced) << replaced.error().message();
    ASSERT_EQ(config.instance.vm.nets.size(), 1u);
    EXPECT_EQ(config.instance.vm.nets[0], net);
    net.id = "b";
    EXPECT_FALSE(put_network_interface(config, net));
    EXPECT_EQ(config.instance.vm.nets.size(), 1u);
}

VmConfig machine_with_every_device() {
    VmConfig vm;
    vm.kernel_path = "/boot/vmlinux";
    vm.initrd_path = "/boot/initrd";
    vm.cmdline = "";
    vm.vcpu_count = 40; // above Firecracker's 32: kvmm's own machines may have more
    vm.memory_size = 512ull << 20;
    DiskConfig root;
    root.id = "root-disk.1";
    root.path = "/var/lib/root.img";
    root.is_root_device = true;
    root.cache = DiskConfig::CacheMode::WriteThrough;
    root.serial = "ROOT1";
    root.rate_limit.bandwidth = TokenBucketConfig { 10 << 20, 1 << 20, 1000 };
    root.rate_limit.ops = TokenBucketConfig { 500, 0, 1000 };
    DiskConfig data;
    data.id = "disk1";
    data.path = "/var/lib/data.img";
    data.read_only = true;
    data.engine = DiskConfig::Engine::Sync;
    data.format = DiskConfig::Format::Qcow2;
    vm.disks = { root, data };
    NetConfig net;
    net.id = "net0";
    net.tap_name = "tap0";
    net.mac = MacAddress { 0x52, 0x54, 0, 0x12, 0x34, 0x56 };
    net.tx_rate_limit.bandwidth = TokenBucketConfig { 1 << 20, 0, 1000 };
    vm.nets = { net };
    vm.vsock = VsockConfig { 7, "/run/v.sock" };
    vm.rng = RngConfig {};
    vm.balloon = BalloonConfig { .target_mib = 64, .deflate_on_oom = true };
    return vm;
}

TEST(MachineConfigFile, ReadsBackAsTheSameMachine) {
    auto const vm = machine_with_every_device();
    auto const text = machine_config_file(vm).dump();
    auto const loaded = load_config_file(text, ConfigDialect::Kvmm);
    ASSERT_TRUE(loaded) << loaded.error().message() << "\n" << text;
    auto const& again = loaded->instance.vm;
    EXPECT_EQ(again.kernel_path, vm.kernel_path);
    EXPECT_EQ(again.initrd_path, vm.initrd_path);
    EXPECT_EQ(again.cmdline, vm.cmdline);
    EXPECT_EQ(again.vcpu_count, vm.vcpu_count);
    EXPECT_EQ(again.memory_size, vm.memory_size);
    EXPECT_EQ(again.disks, vm.disks);
    EXPECT_EQ(again.nets, vm.nets);
    EXPECT_EQ(again.vsock, vm.vsock);
    EXPECT_EQ(again.rng, vm.rng);
    EXPECT_EQ(again.balloon, vm.balloon);
}

TEST(MachineConfigFile, KvmmFieldsAreRefusedInFirecrackersDialect) {
    auto vm = machine_with_every_device();
    vm.vcpu_count = 2;
    auto document = machine_config_file(vm);
    auto const extension = load_config_file(document.dump());
    ASSERT_FALSE(extension);
    EXPECT_NE(extension.error().message().find("kvmm_cache"), std::string::npos) << extension.error().message();
    // Without kvmm's fields, the first drive's id still has '-' and '.', which Firecracker's
    // ids do not allow.
    for (auto& drive : document["drives"]) {
        drive.erase("kvmm_cache");
        drive.erase("kvmm_serial");
    }
    auto const refused = load_config_file(document.dump());
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("root-disk.1"), std::string::npos) << refused.error().message();
    document["drives"][0]["drive_id"] = "root";
    auto const accepted = load_config_file(document.dump());
    EXPECT_TRUE(accepted) << accepted.error().message();
    // 40 vCPUs are kvmm's own, not Firecracker's.
    document["machine-config"]["vcpu_count"] = 40;
    EXPECT_FALSE(load_config_file(document.dump()));
    EXPECT_TRUE(load_config_file(document.dump(), ConfigDialect::Kvmm));
}

TEST(MachineConfigFile, BadKvmmFields_AreRefusedNamingTheField) {
    auto document = machine_config_file(machine_with_every_device());
    document["drives"][0]["kvmm_cache"] = "sometimes";
    auto const refused = load_config_file(document.dump(), ConfigDialect::Kvmm);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("kvmm_cache"), std::string::npos) << refused.error().message();
    document["drives"][0]["kvmm_cache"] = "writeback";
    document["drives"][0]["drive_id"] = "a,b";
    EXPECT_FALSE(load_config_file(document.dump(), ConfigDialect::Kvmm));
}

TEST(MicrovmConfigJson, DriveFormatIsRawUnlessGivenAndOnlyRawOrQcow2) {
    auto loaded = load_config_file(R"({
        "boot-source": {"kernel_image_path": "/vmlinux"},
        "drives": [{"drive_id": "a", "path_on_host": "/a", "is_root_device": false},
                   {"drive_id": "b", "path_on_host": "/b", "is_root_device": false, "format": "qcow2"}]
    })");
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_EQ(loaded->instance.vm.disks[0].format, DiskConfig::Format::Raw);
    EXPECT_EQ(loaded->instance.vm.disks[1].format, DiskConfig::Format::Qcow2);
    auto refused = load_config_file(R"({
        "boot-source": {"kernel_image_path": "/vmlinux"},
        "drives": [{"drive_id": "a", "path_on_host": "/a", "is_root_device": false, "format": "vmdk"}]
    })");
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("format"), std::string::npos) << refused.error().message();
}

} // namespace
} // namespace kvmm

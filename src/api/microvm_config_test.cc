#include "api/microvm_config.h"

#include "api/resource_parsers.h"

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

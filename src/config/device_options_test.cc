#include "config/device_options.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

TEST(DeviceOptions, KeyValueListsKeepOrderAndRejectDuplicates) {
    auto const pairs = *parse_key_values("--x", "a=1,b,c=x=y");
    ASSERT_EQ(pairs.size(), 3u);
    EXPECT_EQ(pairs[1].first, "b");
    EXPECT_EQ(pairs[1].second, "");
    EXPECT_EQ(pairs[2].second, "x=y");
    EXPECT_FALSE(parse_key_values("--x", "a=1,a=2"));
    EXPECT_FALSE(parse_key_values("--x", "a=1,,b=2"));
    EXPECT_FALSE(parse_key_values("--x", "=3"));
    EXPECT_TRUE(parse_key_values("--x", "")->empty());
}

TEST(DeviceOptions, DiskWithEveryKey) {
    auto const disk = *parse_disk_option(
        "path=/tmp/a.img,id=root,readonly=on,cache=writethrough,engine=sync,format=qcow2,serial=S1,root=on,"
        "bw=10M,bw_burst=1M,"
        "iops=1000,iops_burst=50",
        0);
    EXPECT_EQ(disk.path, "/tmp/a.img");
    EXPECT_EQ(disk.id, "root");
    EXPECT_TRUE(disk.read_only);
    EXPECT_TRUE(disk.is_root_device);
    EXPECT_EQ(disk.cache, DiskConfig::CacheMode::WriteThrough);
    EXPECT_EQ(disk.engine, DiskConfig::Engine::Sync);
    EXPECT_EQ(disk.format, DiskConfig::Format::Qcow2);
    EXPECT_EQ(disk.serial, "S1");
    ASSERT_TRUE(disk.rate_limit.bandwidth);
    EXPECT_EQ(disk.rate_limit.bandwidth->size, 10u << 20);
    EXPECT_EQ(disk.rate_limit.bandwidth->one_time_burst, 1u << 20);
    EXPECT_EQ(disk.rate_limit.bandwidth->refill_time_ms, 1000u);
    ASSERT_TRUE(disk.rate_limit.ops);
    EXPECT_EQ(disk.rate_limit.ops->size, 1000u);
}

TEST(DeviceOptions, DiskRecordTakesThePathOfTheRecording) {
    auto const disk = parse_disk_option("path=a.img,record=/tmp/a.log", 0);
    ASSERT_TRUE(disk) << disk.error().message();
    EXPECT_EQ(disk->record_path, "/tmp/a.log");
    EXPECT_FALSE(parse_disk_option("path=a.img", 0)->record_path);
    auto const empty = parse_disk_option("path=a.img,record=", 0);
    ASSERT_FALSE(empty);
    EXPECT_NE(empty.error().message().find("record="), std::string::npos) << empty.error().message();
}

TEST(DeviceOptions, DiskDefaults) {
    auto const disk = *parse_disk_option("path=x.img", 2);
    EXPECT_EQ(disk.id, "disk2");
    EXPECT_FALSE(disk.read_only);
    EXPECT_EQ(disk.cache, DiskConfig::CacheMode::WriteBack);
    EXPECT_EQ(disk.engine, DiskConfig::Engine::IoUring);
    EXPECT_EQ(disk.format, DiskConfig::Format::Raw); // never probed
    EXPECT_TRUE(disk.rate_limit.empty());
}

TEST(DeviceOptions, BadDiskOptionsNameTheProblem) {
    struct Case {
        char const* text;
        char const* expected;
    } const cases[] = {
        { "id=x", "needs path" },
        { "path=a,colour=red", "unknown key 'colour'" },
        { "path=a,readonly=maybe", "readonly=maybe" },
        { "path=a,cache=none", "cache=none" },
        { "path=a,engine=aio", "engine=aio" },
        { "path=a,format=vmdk", "format=vmdk" },
        { "path=a,iops=-1", "iops=-1" },
        { "path=a,bw_burst=1M", "bw_burst needs bw" },
        { "path=a,bw=lots", "bw=lots" },
    };
    for (auto const& test_case : cases) {
        auto const parsed = parse_disk_option(test_case.text, 0);
        ASSERT_FALSE(parsed) << test_case.text;
        EXPECT_NE(parsed.error().message().find(test_case.expected), std::string::npos)
            << test_case.text << ": " << parsed.error().message();
    }
}

TEST(DeviceOptions, NetNeedsExactlyOneBackend) {
    auto const net = *parse_net_option("tap=tap0,mac=02:00:00:00:00:01", 0);
    EXPECT_EQ(net.tap_name, "tap0");
    EXPECT_EQ(net.id, "net0");
    ASSERT_TRUE(net.mac);
    EXPECT_EQ((*net.mac)[5], 1);
    EXPECT_EQ(*parse_net_option("fd=7", 1)->tap_fd, 7);
    EXPECT_FALSE(parse_net_option("mac=02:00:00:00:00:01", 0));
    EXPECT_FALSE(parse_net_option("tap=a,fd=3", 0));
    EXPECT_FALSE(parse_net_option("tap=a,mac=01:00:00:00:00:01", 0)) << "multicast";
    EXPECT_FALSE(parse_net_option("tap=a,mac=zz:00:00:00:00:01", 0));
}

TEST(DeviceOptions, VsockNeedsAGuestCidAndASocket) {
    auto const vsock = *parse_vsock_option("cid=3,uds=/tmp/v.sock");
    EXPECT_EQ(vsock.guest_cid, 3u);
    EXPECT_EQ(vsock.uds_path, "/tmp/v.sock");
    EXPECT_FALSE(parse_vsock_option("cid=2,uds=/tmp/v.sock")) << "CID 2 is the host";
    EXPECT_FALSE(parse_vsock_option("cid=3"));
    EXPECT_FALSE(parse_vsock_option("cid=99999999999,uds=x"));
}

TEST(DeviceOptions, BalloonAndRng) {
    auto const balloon = *parse_balloon_option("size=256M,deflate_on_oom=on,stats=5,free_page_reporting=on");
    EXPECT_EQ(balloon.target_mib, 256u);
    EXPECT_TRUE(balloon.deflate_on_oom);
    EXPECT_EQ(balloon.stats_polling_interval_s, 5u);
    EXPECT_TRUE(balloon.free_page_reporting);
    EXPECT_FALSE(parse_balloon_option("size=1M,stats=999999"));
    EXPECT_TRUE(parse_rng_option("")->rate_limit.empty());
    EXPECT_EQ(parse_rng_option("bw=1K")->rate_limit.bandwidth->size, 1024u);
    EXPECT_FALSE(parse_rng_option("bw_burst=1K"));
}

TEST(DeviceOptions, RootDiskAddsRootToTheCommandLine) {
    VmConfig config;
    config.cmdline = "console=ttyS0";
    config.disks.push_back(*parse_disk_option("path=a", 0));
    config.disks.push_back(*parse_disk_option("path=b,root=on,readonly=on", 1));
    EXPECT_EQ(effective_cmdline(config), "console=ttyS0 root=/dev/vdb ro");
    config.disks[1].read_only = false;
    EXPECT_EQ(effective_cmdline(config), "console=ttyS0 root=/dev/vdb rw");
    config.cmdline = "root=/dev/sda1 quiet";
    EXPECT_EQ(effective_cmdline(config), "root=/dev/sda1 quiet") << "an explicit root wins";
    config.disks[1].is_root_device = false;
    config.cmdline = "x";
    EXPECT_EQ(effective_cmdline(config), "x");
}

TEST(DeviceOptions, ValidationRejectsDuplicateIdsAndTwoRootDisks) {
    VmConfig config;
    config.kernel_path = "k";
    config.disks.push_back(*parse_disk_option("path=a,id=x,root=on", 0));
    config.disks.push_back(*parse_disk_option("path=b,id=x", 1));
    EXPECT_FALSE(validate_devices(config));
    config.disks[1].id = "y";
    EXPECT_TRUE(validate_devices(config));
    config.disks[1].is_root_device = true;
    EXPECT_FALSE(validate_devices(config));
    config.disks.pop_back();
    config.nets.push_back(*parse_net_option("tap=t0,id=x", 0));
    EXPECT_TRUE(validate_devices(config)) << "ids are unique per kind: a disk and a NIC may share x";
    config.nets.push_back(*parse_net_option("tap=t1,id=x", 1));
    EXPECT_FALSE(validate_devices(config)) << "two NICs share the id x";
    config.nets.pop_back();
    config.nets[0].id = "n";
    config.balloon = BalloonConfig { 1 << 20, false, 0, false };
    EXPECT_FALSE(validate_devices(config)) << "balloon larger than RAM";
}

// The kernel would open "/etc/shadow" for "/etc/shadow\0.img"; a flag can carry no NUL (argv
// strings end there) but can carry every other control character.
TEST(DeviceOptions, PathsWithControlCharacters_AreRefusedNamingTheFlag) {
    // The error message of a failed parse; empty when it succeeded.
    auto error_of = [](auto const& result) { return result ? std::string() : result.error().message(); };
    std::pair<std::string, char const*> const cases[] = {
        { error_of(parse_disk_option("path=/tmp/disk\n.img", 0)), "--disk path=" },
        { error_of(parse_disk_option("path=/tmp/disk\x01", 0)), "--disk path=" },
        { error_of(parse_net_option("tap=tap\t0", 0)), "--net tap=" },
        { error_of(parse_vsock_option("cid=3,uds=/run/v\x7f.sock")), "--vsock uds=" },
    };
    for (auto const& [message, flag] : cases) {
        EXPECT_NE(message.find(flag), std::string::npos) << flag << ": " << message;
        EXPECT_NE(message.find("control character"), std::string::npos) << message;
    }
    EXPECT_TRUE(parse_disk_option("path=/tmp/ordinary disk.img", 0));
}

TEST(DeviceOptions, ValidationRejectsControlCharactersInAnyPathOfTheConfig) {
    VmConfig config;
    config.kernel_path = "k";
    EXPECT_TRUE(validate_devices(config));
    config.kernel_path = std::string("/etc/shadow\0.img", 16);
    EXPECT_FALSE(validate_devices(config));
    config.kernel_path = "k";
    config.disks.push_back(DiskConfig {});
    config.disks[0].id = "root";
    config.disks[0].path = std::string("/etc/shadow\0.img", 16);
    auto const disk = validate_devices(config);
    ASSERT_FALSE(disk);
    EXPECT_NE(disk.error().message().find("disk 'root'"), std::string::npos) << disk.error().message();
    config.disks.clear();
    config.vsock = VsockConfig { 3, "/run/v\n" };
    EXPECT_FALSE(validate_devices(config));
}

// Flag parsing: each --net is parsed alone, so the cross-interface rules come from validate(),
// which kvmm runs on the flags' result as on every other entry point's.
TEST(DeviceOptions, NetFlagsSharingATapOrMac_AreRefusedByValidate) {
    VmConfig config;
    config.kernel_path = "/boot/vmlinuz";
    config.nets.push_back(parse_net_option("tap=tap0,mac=02:00:00:00:00:01", 0).value());
    config.nets.push_back(parse_net_option("tap=tap1,mac=02:00:00:00:00:02", 1).value());
    EXPECT_TRUE(validate(config, 8));
    config.nets[1] = parse_net_option("tap=tap0,mac=02:00:00:00:00:02", 1).value();
    EXPECT_FALSE(validate(config, 8));
    config.nets[1] = parse_net_option("tap=tap1,mac=02:00:00:00:00:01", 1).value();
    EXPECT_FALSE(validate(config, 8));
}

TEST(DeviceOptions, BalloonFlagLargerThanMemory_IsRefusedByValidate) {
    VmConfig config;
    config.kernel_path = "/boot/vmlinuz";
    config.memory_size = 128ull << 20;
    config.balloon = parse_balloon_option("size=128M").value();
    EXPECT_TRUE(validate(config, 8));
    config.balloon = parse_balloon_option("size=129M").value();
    EXPECT_FALSE(validate(config, 8));
}

} // namespace
} // namespace kvmm

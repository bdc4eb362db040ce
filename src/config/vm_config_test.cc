#include "config/vm_config.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

TEST(ParseMemorySize, AcceptsSuffixesAndPlainMebibytes) {
    EXPECT_EQ(parse_memory_size("128M").value(), 128ull << 20);
    EXPECT_EQ(parse_memory_size("4G").value(), 4ull << 30);
    EXPECT_EQ(parse_memory_size("4GiB").value(), 4ull << 30);
    EXPECT_EQ(parse_memory_size("512k").value(), 512ull << 10);
    EXPECT_EQ(parse_memory_size("256").value(), 256ull << 20);
}

TEST(ParseMemorySize, RejectsGarbageAndOverflowNamingTheText) {
    for (auto text : { "abc", "", "12X", "-5M", "1.5G" }) {
        auto result = parse_memory_size(text);
        ASSERT_FALSE(result.has_value()) << text;
        EXPECT_NE(result.error().message().find("memory size"), std::string::npos);
    }
    EXPECT_FALSE(parse_memory_size("99999999999999T").has_value());
}

TEST(ConsoleConfig, ParsesAllKindsAndRejectsOthers) {
    EXPECT_EQ(ConsoleConfig::parse("stdio")->kind, ConsoleConfig::Kind::Stdio);
    EXPECT_EQ(ConsoleConfig::parse("none")->kind, ConsoleConfig::Kind::None);
    EXPECT_EQ(ConsoleConfig::parse("file=/tmp/x")->path, "/tmp/x");
    EXPECT_FALSE(ConsoleConfig::parse("file=").has_value());
    EXPECT_FALSE(ConsoleConfig::parse("tty").has_value());
}

TEST(ConsoleConfig, PathsWithControlCharacters_AreRefusedNamingTheFlag) {
    for (auto text : { "file=/tmp/console\n.log", "socket=/run/c\x1b.sock" }) {
        auto const parsed = ConsoleConfig::parse(text);
        ASSERT_FALSE(parsed) << text;
        EXPECT_NE(parsed.error().message().find("--console"), std::string::npos) << parsed.error().message();
        EXPECT_NE(parsed.error().message().find("control character"), std::string::npos);
    }
}

TEST(ValidateConfig, RejectsZeroAndTooManyVcpusAndBadMemory) {
    VmConfig config;
    config.kernel_path = "/boot/vmlinuz";
    EXPECT_TRUE(validate(config, 8).has_value());
    config.vcpu_count = 0;
    EXPECT_FALSE(validate(config, 8).has_value());
    config.vcpu_count = 9;
    auto too_many = validate(config, 8);
    ASSERT_FALSE(too_many.has_value());
    EXPECT_NE(too_many.error().message().find("9"), std::string::npos);
    config.vcpu_count = 1;
    config.memory_size = 0;
    EXPECT_FALSE(validate(config, 8).has_value());
    config.memory_size = 1ull << 50;
    EXPECT_FALSE(validate(config, 8).has_value());
}

TEST(ValidateConfig, FirmwareStandsInForTheKernel) {
    VmConfig config;
    auto const neither = validate(config, 64);
    ASSERT_FALSE(neither);
    EXPECT_NE(neither.error().message().find("--firmware"), std::string::npos) << neither.error().message();
    config.firmware_path = "/usr/share/seabios/bios-microvm.bin";
    EXPECT_TRUE(validate(config, 64));
    config.kernel_path = "/boot/vmlinuz";
    EXPECT_TRUE(validate(config, 64)) << "a kernel with firmware goes to the firmware";
}

TEST(ValidateConfig, FirmwareProblemsAreRefusedNamingThem) {
    VmConfig config;
    config.firmware_path = "";
    auto const empty = validate(config, 64);
    ASSERT_FALSE(empty);
    EXPECT_NE(empty.error().message().find("firmware path is empty"), std::string::npos) << empty.error().message();
    config.firmware_path = "/tmp/bios\x01.bin";
    auto const control = validate(config, 64);
    ASSERT_FALSE(control);
    EXPECT_NE(control.error().message().find("firmware"), std::string::npos) << control.error().message();
    config.firmware_path = "/tmp/bios.bin";
    config.initrd_path = "/tmp/initrd";
    auto const initrd = validate(config, 64);
    ASSERT_FALSE(initrd);
    EXPECT_NE(initrd.error().message().find("initrd needs a kernel"), std::string::npos) << initrd.error().message();
}

TEST(ValidateConfig, RejectsOverlongCommandLine) {
    VmConfig config;
    config.kernel_path = "/boot/vmlinuz";
    config.cmdline.assign(MAX_CMDLINE_LENGTH + 1, 'x');
    auto result = validate(config, 8);
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("command line"), std::string::npos);
}

// Firecracker keeps drive and network-interface ids apart (firectl's root drive "1" beside the
// Go SDK's interface "1"); within one kind an id is still unique.
TEST(ValidateDevices, IdsAreUniquePerDeviceKindOnly) {
    VmConfig config;
    DiskConfig disk;
    disk.id = "1";
    disk.path = "/d";
    config.disks.push_back(disk);
    NetConfig net;
    net.id = "1";
    net.tap_name = "tap0";
    config.nets.push_back(net);
    auto shared = validate_devices(config);
    EXPECT_TRUE(shared) << shared.error().message();
    config.nets.push_back(net);
    config.nets.back().tap_name = "tap1";
    EXPECT_FALSE(validate_devices(config));
    config.nets.pop_back();
    disk.path = "/e";
    config.disks.push_back(disk);
    EXPECT_FALSE(validate_devices(config));
}

TEST(ValidateConfig, TwoThreadsPerCoreNeedOneOrAnEvenVcpuCount) {
    VmConfig config;
    config.kernel_path = "/boot/vmlinuz";
    config.threads_per_core = 2;
    for (uint32_t count : { 1u, 2u, 4u })
        EXPECT_TRUE(validate((config.vcpu_count = count, config), 8)) << count;
    config.vcpu_count = 3;
    EXPECT_FALSE(validate(config, 8));
    config.vcpu_count = 2;
    config.threads_per_core = 3;
    EXPECT_FALSE(validate(config, 8));
}

// The rules that only the API checked before the config library: every entry point now gets
// them through validate().
VmConfig machine_with_two_interfaces() {
    VmConfig config;
    config.kernel_path = "/boot/vmlinuz";
    NetConfig first;
    first.id = "eth0";
    first.tap_name = "tap0";
    first.mac = MacAddress { 0x02, 0, 0, 0, 0, 1 };
    NetConfig second = first;
    second.id = "eth1";
    second.tap_name = "tap1";
    second.mac = MacAddress { 0x02, 0, 0, 0, 0, 2 };
    config.nets = { first, second };
    return config;
}

TEST(ValidateConfig, DistinctTapsAndMacsAreAccepted) {
    auto const accepted = validate(machine_with_two_interfaces(), 8);
    EXPECT_TRUE(accepted) << accepted.error().message();
}

TEST(ValidateConfig, TwoInterfacesOnOneTap_AreRefusedNamingBoth) {
    auto config = machine_with_two_interfaces();
    config.nets[1].tap_name = "tap0";
    auto const refused = validate(config, 8);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("TAP 'tap0' is already used by 'eth0'"), std::string::npos)
        << refused.error().message();
}

TEST(ValidateConfig, TwoInterfacesOnOneInheritedTapFd_AreRefused) {
    auto config = machine_with_two_interfaces();
    config.nets[0].tap_name.clear();
    config.nets[0].tap_fd = 5;
    config.nets[1].tap_name.clear();
    config.nets[1].tap_fd = 5;
    EXPECT_FALSE(validate(config, 8));
    config.nets[1].tap_fd = 6;
    EXPECT_TRUE(validate(config, 8));
}

TEST(ValidateConfig, TwoInterfacesWithOneMac_AreRefusedNamingTheMac) {
    auto config = machine_with_two_interfaces();
    config.nets[1].mac = config.nets[0].mac;
    auto const refused = validate(config, 8);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("MAC 02:00:00:00:00:01 is already used by 'eth0'"), std::string::npos)
        << refused.error().message();
}

TEST(ValidateConfig, TapNameLongerThanIfnamsiz_IsRefused) {
    auto config = machine_with_two_interfaces();
    config.nets[1].tap_name = std::string(MAX_TAP_NAME_LENGTH, 't');
    EXPECT_TRUE(validate(config, 8));
    config.nets[1].tap_name += 't';
    auto const refused = validate(config, 8);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("longer than 15 bytes"), std::string::npos) << refused.error().message();
}

TEST(ValidateConfig, MoreVirtioDevicesThanInterruptLines_AreRefusedCountingThem) {
    auto config = machine_with_two_interfaces(); // 2 devices
    config.rng = RngConfig {};                   // 3
    for (size_t i = 0; i < MAX_VIRTIO_DEVICES - 3; ++i) {
        DiskConfig disk;
        disk.id = "d" + std::to_string(i);
        disk.path = "/images/d" + std::to_string(i);
        config.disks.push_back(disk);
    }
    auto const full = validate(config, 8);
    EXPECT_TRUE(full) << full.error().message();
    config.disks.push_back(config.disks.back());
    config.disks.back().id = "one-more";
    auto const refused = validate(config, 8);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("19 virtio devices (16 disks, 2 network interfaces and 1 others)"),
              std::string::npos)
        << refused.error().message();
}

TEST(ValidateConfig, BalloonLargerThanMemory_IsRefusedNamingTheBalloon) {
    VmConfig config;
    config.kernel_path = "/boot/vmlinuz";
    config.memory_size = 256ull << 20;
    config.balloon = BalloonConfig { .target_mib = 256 };
    EXPECT_TRUE(validate(config, 8));
    config.balloon->target_mib = 257;
    auto const refused = validate(config, 8);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("balloon"), std::string::npos) << refused.error().message();
    EXPECT_NE(refused.error().message().find("larger than the guest memory"), std::string::npos);
}

TEST(ValidateConfig, MemoryBoundsAreTheArchitecturesRange) {
    VmConfig config;
    config.kernel_path = "/boot/vmlinuz";
    for (uint64_t size : { MIN_GUEST_MEMORY_SIZE, MAX_GUEST_MEMORY_SIZE })
        EXPECT_TRUE(validate((config.memory_size = size, config), 8)) << size;
    for (uint64_t size :
         { uint64_t { MIN_GUEST_MEMORY_SIZE - 4096 }, MAX_GUEST_MEMORY_SIZE + 4096, uint64_t { (64ull << 20) + 512 } })
        EXPECT_FALSE(validate((config.memory_size = size, config), 8)) << size;
}

} // namespace
} // namespace kvmm

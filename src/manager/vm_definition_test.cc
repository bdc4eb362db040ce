#include "manager/vm_definition.h"

#include "config/device_options.h"
#include "config/microvm_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/testing/temporary_directory.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <sys/sysmacros.h>

namespace kvmm {
namespace {

using ::testing::HasSubstr;

constexpr std::string_view FULL_DEFINITION = R"(
name = "web-1.example"
vcpus = 2
memory = "1G"
kernel = "/var/lib/kvmm/vmlinux"
initrd = "/var/lib/kvmm/initrd.cpio"
cmdline = "console=ttyS0 reboot=k"
autostart = true
restart = "on-failure"
rng = true

[[disk]]
path = "/var/lib/kvmm/root.img"
id = "rootfs"
root = true
cache = "writethrough"

[[disk]]
path = "/var/lib/kvmm/data.img"
readonly = true
serial = "DATA1"
iops = 500
bw = "10M"

[[nic]]
tap = "tap0"
mac = "52:54:00:12:34:56"

[vsock]
cid = 7
uds = "/run/kvmm/web.vsock"

[resources]
cpu_weight = 200
cpu_quota_percent = 150
memory_limit = "2G"

[pinning]
vcpu0 = [0, 1]
vcpu1 = [2]
)";

std::string error_of(std::string_view text) {
    auto const definition = parse_definition(text);
    return definition ? std::string("(parsed)") : definition.error().message();
}

std::string minimal(std::string_view extra) {
    return std::string("name = \"vm\"\nkernel = \"/k\"\n") + std::string(extra);
}

TEST(ParseDefinition, FullDefinition_FillsEveryField) {
    auto const definition = parse_definition(FULL_DEFINITION);
    ASSERT_TRUE(definition) << definition.error().message();
    EXPECT_EQ(definition->name, "web-1.example");
    EXPECT_EQ(definition->vcpus, 2u);
    EXPECT_EQ(definition->memory_size, 1024ull << 20);
    EXPECT_EQ(definition->kernel, "/var/lib/kvmm/vmlinux");
    EXPECT_EQ(definition->initrd, "/var/lib/kvmm/initrd.cpio");
    EXPECT_EQ(definition->cmdline, "console=ttyS0 reboot=k");
    EXPECT_TRUE(definition->autostart);
    EXPECT_TRUE(definition->rng);
    EXPECT_EQ(definition->restart, VmDefinition::RestartPolicy::OnFailure);
    ASSERT_EQ(definition->disks.size(), 2u);
    EXPECT_EQ(definition->disks[0],
              MUST(parse_disk_option("path=/var/lib/kvmm/root.img,id=rootfs,cache=writethrough,root=on", 0)));
    EXPECT_EQ(definition->disks[0].cache, DiskConfig::CacheMode::WriteThrough);
    EXPECT_EQ(definition->disks[1],
              MUST(parse_disk_option("path=/var/lib/kvmm/data.img,readonly=on,serial=DATA1,bw=10M,iops=500", 1)));
    EXPECT_EQ(definition->disks[1].id, "disk1");
    EXPECT_EQ(definition->disks[1].rate_limit.bandwidth->size, 10u << 20);
    ASSERT_EQ(definition->nics.size(), 1u);
    EXPECT_EQ(definition->nics[0], MUST(parse_net_option("tap=tap0,mac=52:54:00:12:34:56", 0)));
    ASSERT_TRUE(definition->vsock);
    EXPECT_EQ(definition->vsock->guest_cid, 7u);
    EXPECT_EQ(definition->vsock->uds_path, "/run/kvmm/web.vsock");
    EXPECT_EQ(definition->cpu_weight, 200u);
    EXPECT_EQ(definition->cpu_quota_percent, 150u);
    EXPECT_EQ(definition->memory_limit_mib, 2048u);
    EXPECT_EQ(definition->vcpu_pins, (std::vector<std::vector<uint32_t>> { { 0, 1 }, { 2 } }));
}

TEST(ParseDefinition, MinimalDefinition_UsesDefaults) {
    auto const definition = parse_definition(minimal(""));
    ASSERT_TRUE(definition) << definition.error().message();
    EXPECT_EQ(definition->vcpus, 1u);
    EXPECT_EQ(definition->memory_size, 128ull << 20);
    EXPECT_FALSE(definition->initrd);
    EXPECT_FALSE(definition->rng);
    EXPECT_FALSE(definition->autostart);
    EXPECT_EQ(definition->restart, VmDefinition::RestartPolicy::Never);
    EXPECT_TRUE(definition->disks.empty());
    EXPECT_FALSE(definition->cpu_weight);
    EXPECT_TRUE(definition->vcpu_pins.empty());
}

TEST(ParseDefinition, IntegerMemory_IsMiB) {
    auto const definition = parse_definition(minimal("memory = 512\n"));
    ASSERT_TRUE(definition) << definition.error().message();
    EXPECT_EQ(definition->memory_size, 512ull << 20);
}

TEST(ParseDefinition, MalformedToml_ReportsLine) {
    auto const message = error_of("name = \"vm\"\nkernel = \n");
    EXPECT_THAT(message, HasSubstr("malformed TOML"));
    EXPECT_THAT(message, HasSubstr("line 2"));
}

TEST(ParseDefinition, UnknownTopLevelKey_NamesKey) {
    EXPECT_THAT(error_of(minimal("colour = \"red\"\n")), HasSubstr("unknown key 'colour'"));
}

TEST(ParseDefinition, UnknownKeyInTable_NamesKeyAndTable) {
    auto const message = error_of(minimal("[[disk]]\npath = \"/d\"\nsize = 3\n"));
    EXPECT_THAT(message, HasSubstr("'size'"));
    EXPECT_THAT(message, HasSubstr("disk[0]"));
    EXPECT_THAT(error_of(minimal("[resources]\ncpu_shares = 3\n")), HasSubstr("'cpu_shares' in [resources]"));
    EXPECT_THAT(error_of(minimal("[vsock]\ncid = 3\nuds = \"/u\"\nport = 1\n")), HasSubstr("'port' in [vsock]"));
}

TEST(ParseDefinition, BadMemory_NamesKeyAndValue) {
    auto const message = error_of(minimal("memory = \"lots\"\n"));
    EXPECT_THAT(message, HasSubstr("memory"));
    EXPECT_THAT(message, HasSubstr("lots"));
    EXPECT_THAT(error_of(minimal("memory = \"1536K\"\n")), HasSubstr("whole number of MiB"));
    EXPECT_THAT(error_of(minimal("memory = 0\n")), HasSubstr("'memory' = 0"));
    EXPECT_THAT(error_of(minimal("memory = true\n")), HasSubstr("memory"));
}

TEST(ParseDefinition, WrongValueType_NamesKeyAndType) {
    auto const message = error_of(minimal("vcpus = \"two\"\n"));
    EXPECT_THAT(message, HasSubstr("'vcpus'"));
    EXPECT_THAT(message, HasSubstr("\"two\""));
    EXPECT_THAT(error_of(minimal("rng = 1\n")), HasSubstr("'rng' must be true or false"));
    EXPECT_THAT(error_of(minimal("[[disk]]\npath = \"/d\"\nreadonly = \"yes\"\n")), HasSubstr("disk[0].readonly"));
}

TEST(ParseDefinition, InvalidNames_AreRejected) {
    EXPECT_THAT(error_of("name = \"a/b\"\nkernel = \"/k\"\n"), HasSubstr("'a/b'"));
    EXPECT_THAT(error_of("name = \".hidden\"\nkernel = \"/k\"\n"), HasSubstr("must not start with '.'"));
    EXPECT_THAT(error_of("name = \"\"\nkernel = \"/k\"\n"), HasSubstr("1 to 64"));
    EXPECT_THAT(error_of("name = \"" + std::string(65, 'x') + "\"\nkernel = \"/k\"\n"), HasSubstr("1 to 64"));
    EXPECT_THAT(error_of("name = \"a b\"\nkernel = \"/k\"\n"), HasSubstr("' '"));
    EXPECT_THAT(error_of("kernel = \"/k\"\n"), HasSubstr("'name' is missing"));
    EXPECT_TRUE(parse_definition("name = \"" + std::string(64, 'x') + "\"\nkernel = \"/k\"\n"));
}

TEST(ParseDefinition, MissingKernel_IsRejected) { EXPECT_THAT(error_of("name = \"vm\"\n"), HasSubstr("'kernel'")); }

TEST(ParseDefinition, PinningBeyondVcpuCount_IsRejected) {
    auto const message = error_of(minimal("vcpus = 2\n[pinning]\nvcpu2 = [0]\n"));
    EXPECT_THAT(message, HasSubstr("pinning.vcpu2"));
    EXPECT_THAT(message, HasSubstr("2 vCPU"));
}

TEST(ParseDefinition, PinningToImpossibleHostCpu_IsRejected) {
    EXPECT_THAT(error_of(minimal("[pinning]\nvcpu0 = [1024]\n")), HasSubstr("pinning.vcpu0"));
    EXPECT_THAT(error_of(minimal("[pinning]\nvcpu0 = [-1]\n")), HasSubstr("pinning.vcpu0"));
    EXPECT_THAT(error_of(minimal("[pinning]\nvcpu0 = []\n")), HasSubstr("empty list"));
    EXPECT_THAT(error_of(minimal("[pinning]\nvcpu00 = [1]\n")), HasSubstr("unknown key 'vcpu00' in [pinning]"));
    EXPECT_THAT(error_of(minimal("[pinning]\ncpu0 = [1]\n")), HasSubstr("unknown key 'cpu0' in [pinning]"));
}

TEST(ParseDefinition, QuotaAboveHundredPerVcpu_IsRejected) {
    EXPECT_TRUE(parse_definition(minimal("vcpus = 2\n[resources]\ncpu_quota_percent = 200\n")));
    auto const message = error_of(minimal("vcpus = 2\n[resources]\ncpu_quota_percent = 201\n"));
    EXPECT_THAT(message, HasSubstr("resources.cpu_quota_percent"));
    EXPECT_THAT(message, HasSubstr("201"));
    EXPECT_THAT(error_of(minimal("[resources]\ncpu_quota_percent = 0\n")), HasSubstr("cpu_quota_percent"));
}

TEST(ParseDefinition, CpuWeightOutOfRange_IsRejected) {
    EXPECT_THAT(error_of(minimal("[resources]\ncpu_weight = 0\n")), HasSubstr("'resources.cpu_weight' = 0"));
    EXPECT_THAT(error_of(minimal("[resources]\ncpu_weight = 10001\n")), HasSubstr("10001"));
}

TEST(ParseDefinition, MemoryLimitBelowGuestMemory_IsRejected) {
    EXPECT_THAT(error_of(minimal("memory = 256\n[resources]\nmemory_limit = \"128M\"\n")),
                HasSubstr("resources.memory_limit"));
}

TEST(ParseDefinition, DeviceValuesKvmmWouldReject_AreRejected) {
    EXPECT_THAT(error_of(minimal("[[disk]]\npath = \"/d\"\ncache = \"sometimes\"\n")), HasSubstr("sometimes"));
    EXPECT_THAT(error_of(minimal("[[nic]]\ntap = \"tap0\"\nmac = \"zz\"\n")), HasSubstr("zz"));
    EXPECT_THAT(error_of(minimal("[vsock]\ncid = 2\nuds = \"/u\"\n")), HasSubstr("cid=2"));
    EXPECT_THAT(error_of(minimal("[[nic]]\nmac = \"52:54:00:12:34:56\"\n")), HasSubstr("tap"));
    // Cross-device rules come from kvmm's validate(): unique ids, at most one root disk.
    EXPECT_THAT(error_of(minimal("[[disk]]\npath = \"/a\"\nid = \"x\"\n[[disk]]\npath = \"/b\"\nid = \"x\"\n")),
                HasSubstr("'x' is used twice"));
    EXPECT_THAT(error_of(minimal("[[disk]]\npath = \"/a\"\nroot = true\n[[disk]]\npath = \"/b\"\nroot = true\n")),
                HasSubstr("root"));
}

// What kvmm's start refuses, define refuses too: the config library's validate() runs on it.
TEST(ParseDefinition, MoreDisksThanTheMachineHolds_IsRejectedAtDefine) {
    std::string disks;
    for (int i = 0; i < 500; ++i)
        disks += fmt::format("[[disk]]\npath = \"/images/d{}\"\n", i);
    EXPECT_THAT(error_of(minimal(disks)), HasSubstr("500 virtio devices"));
}

TEST(ParseDefinition, TapNameLongerThan15Bytes_IsRejectedAtDefine) {
    EXPECT_EQ(error_of(minimal("[[nic]]\ntap = \"tap-123456789ab\"\n")), "(parsed)") << "15 bytes fit";
    EXPECT_THAT(error_of(minimal("[[nic]]\ntap = \"tap-123456789abc\"\n")), HasSubstr("longer than 15 bytes"));
}

// A block device node to point a definition at: one made in a temporary directory (it is only
// stat()ed, never opened), or, where mknod is not permitted, one of the host's own.
std::string some_block_device(testing::TemporaryDirectory const& directory) {
    auto const node = directory / "blockdev";
    if (::mknod(node.c_str(), S_IFBLK | 0600, ::makedev(7, 0)) == 0)
        return node;
    for (auto const& entry : std::filesystem::directory_iterator("/dev")) {
        struct stat status {};
        if (::stat(entry.path().c_str(), &status) == 0 && S_ISBLK(status.st_mode))
            return entry.path();
    }
    return {};
}

TEST(CheckHostBlockDevices, WritableHostBlockDeviceNeedsTheExplicitKey) {
    testing::TemporaryDirectory directory;
    auto const device = some_block_device(directory);
    ASSERT_FALSE(device.empty()) << "no block device node could be made or found";
    auto const disk = fmt::format("[[disk]]\npath = \"{}\"\nid = \"host\"\n", device);

    auto const writable = MUST(parse_definition(minimal(disk)));
    auto const refused = check_host_block_devices(writable);
    ASSERT_FALSE(refused);
    EXPECT_THAT(refused.error().message(), HasSubstr("disk 'host'"));
    EXPECT_THAT(refused.error().message(), HasSubstr("allow_host_device_write = true"));

    EXPECT_TRUE(check_host_block_devices(MUST(parse_definition(minimal(disk + "readonly = true\n")))));
    auto const allowed = MUST(parse_definition(minimal(disk + "allow_host_device_write = true\n")));
    EXPECT_TRUE(check_host_block_devices(allowed));
    // The key survives the definition's round trip through kvmmd's state directory.
    EXPECT_EQ(MUST(parse_definition(to_toml(allowed))), allowed);
    EXPECT_THAT(error_of(minimal(disk + "allow_host_device_write = \"yes\"\n")),
                HasSubstr("disk[0].allow_host_device_write"));
}

TEST(CheckHostBlockDevices, RegularFilesAndMissingPathsNeedNothing) {
    testing::TemporaryDirectory directory;
    auto const file = directory / "disk.img";
    std::ofstream(file).put('\0');
    auto const definition = MUST(parse_definition(
        minimal(fmt::format("[[disk]]\npath = \"{}\"\n[[disk]]\npath = \"{}\"\n", file, directory / "missing"))));
    EXPECT_TRUE(check_host_block_devices(definition));
}

TEST(ParseDefinition, CommaInDeviceValue_IsRejected) {
    EXPECT_THAT(error_of(minimal("[[disk]]\npath = \"/a,readonly=on\"\n")), HasSubstr("disk[0].path"));
}

TEST(ParseDefinition, ControlCharactersInPaths_AreRejectedNamingTheField) {
    // TOML can carry any control character in a string through \uXXXX escapes.
    struct Case {
        std::string toml;
        std::string field;
    };
    std::vector<Case> const cases = {
        { "name = \"vm\"\nkernel = \"/etc/shadow\\u0000.img\"\n", "'kernel'" },
        { "name = \"vm\"\nkernel = \"/k\\n\"\n", "'kernel'" },
        { minimal("initrd = \"/boot/initrd\\u001b[2J\"\n"), "'initrd'" },
        { minimal("[[disk]]\npath = \"/etc/shadow\\u0000.img\"\n"), "'disk[0].path'" },
        { minimal("[[disk]]\npath = \"/a\"\n[[disk]]\npath = \"/b\\u007f\"\n"), "'disk[1].path'" },
        { minimal("[vsock]\ncid = 3\nuds = \"/run/v\\tsock\"\n"), "'vsock.uds'" },
        { minimal("[[nic]]\ntap = \"tap\\u00010\"\n"), "'nic[0].tap'" },
    };
    for (auto const& [toml, field] : cases) {
        auto const message = error_of(toml);
        EXPECT_THAT(message, HasSubstr(field)) << toml;
        EXPECT_THAT(message, HasSubstr("control character")) << toml;
    }
    // The same checks hold for a definition built in code (e.g. from a JSON request).
    VmDefinition definition = MUST(parse_definition(minimal("")));
    definition.kernel = std::string("/etc/shadow\0.img", 16);
    auto const checked = validate_definition(definition);
    ASSERT_FALSE(checked);
    EXPECT_THAT(checked.error().message(), HasSubstr("'kernel'"));
    EXPECT_THAT(checked.error().message(), HasSubstr("0x00"));
    // Printable paths, spaces and non-ASCII included, are fine.
    EXPECT_TRUE(parse_definition(minimal("[[disk]]\npath = \"/var/lib/my disk/r\u00e9seau.img\"\n")));
}

TEST(ParseDefinition, BadRestartPolicy_NamesValue) {
    auto const message = error_of(minimal("restart = \"sometimes\"\n"));
    EXPECT_THAT(message, HasSubstr("restart"));
    EXPECT_THAT(message, HasSubstr("sometimes"));
}

TEST(ToToml, FullDefinition_RoundTrips) {
    auto const definition = MUST(parse_definition(FULL_DEFINITION));
    auto const text = to_toml(definition);
    auto const again = parse_definition(text);
    ASSERT_TRUE(again) << again.error().message() << "\n" << text;
    EXPECT_EQ(*again, definition);
}

TEST(ToToml, SpecialCharactersInStrings_RoundTrip) {
    VmDefinition definition;
    definition.name = "vm";
    definition.kernel = "/k \"quoted\" \\ back";
    definition.cmdline = "a\tb\nc \x01 é";
    definition.vcpus = 3;
    definition.vcpu_pins = { {}, { 5 } };
    auto const again = parse_definition(to_toml(definition));
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(*again, definition);
}

TEST(ValidateDefinition, InterfaceWithoutATapName_IsRejected) {
    VmDefinition definition;
    definition.name = "vm";
    definition.kernel = "/k";
    definition.nics = { MUST(parse_net_option("fd=3", 0)) };
    EXPECT_FALSE(validate_definition(definition));
    definition.nics = { MUST(parse_net_option("tap=tap0", 0)) };
    EXPECT_TRUE(validate_definition(definition));
}

TEST(ValidateDefinition, MemoryThatIsNoWholeNumberOfMib_IsRejected) {
    VmDefinition definition;
    definition.name = "vm";
    definition.kernel = "/k";
    definition.memory_size = (64ull << 20) + 4096;
    EXPECT_FALSE(validate_definition(definition));
    definition.memory_size = 0;
    EXPECT_FALSE(validate_definition(definition));
    definition.memory_size = 64ull << 20;
    EXPECT_TRUE(validate_definition(definition));
}

// The rules the API alone checked before the config library, now through a kvmmd definition.
TEST(ParseDefinition, InterfacesSharingATapOrMac_AreRejected) {
    EXPECT_THAT(error_of(minimal("[[nic]]\ntap = \"tap0\"\n[[nic]]\ntap = \"tap0\"\n")),
                HasSubstr("TAP 'tap0' is already used by 'net0'"));
    EXPECT_THAT(error_of(minimal("[[nic]]\ntap = \"tap0\"\nmac = \"02:00:00:00:00:01\"\n"
                                 "[[nic]]\ntap = \"tap1\"\nmac = \"02:00:00:00:00:01\"\n")),
                HasSubstr("MAC 02:00:00:00:00:01 is already used by 'net0'"));
    EXPECT_THAT(error_of(minimal("[[nic]]\ntap = \"tap456789abcdef0\"\n")), HasSubstr("longer than 15 bytes"));
    EXPECT_EQ(error_of(minimal("[[nic]]\ntap = \"tap0\"\n[[nic]]\ntap = \"tap1\"\n")), "(parsed)");
}

TEST(ParseDefinition, MemoryOutsideTheArchitecturesRange_IsRejected) {
    EXPECT_THAT(error_of(minimal("memory = 8\n")), HasSubstr("outside the supported range"));
    EXPECT_EQ(error_of(minimal("memory = 16\n")), "(parsed)");
}

// A state directory written by an older kvmmd holds the same TOML, with sizes as written
// by the user ("10M") and default ids left out: it loads into the typed definition.
TEST(ParseDefinition, DefinitionWrittenByAnOlderKvmmd_LoadsTyped) {
    constexpr std::string_view OLDER = R"(name = "old"
vcpus = 1
memory = 256
kernel = "/k"
cmdline = ""
autostart = false
restart = "never"
rng = false

[[disk]]
path = "/var/lib/root.img"
readonly = true
bw = "10M"
bw_burst = "1M"

[[nic]]
tap = "tap0"
rx_bw = "2M"
)";
    auto const definition = parse_definition(OLDER);
    ASSERT_TRUE(definition) << definition.error().message();
    ASSERT_EQ(definition->disks.size(), 1u);
    EXPECT_EQ(definition->disks[0].id, "disk0");
    EXPECT_TRUE(definition->disks[0].read_only);
    ASSERT_TRUE(definition->disks[0].rate_limit.bandwidth);
    EXPECT_EQ(definition->disks[0].rate_limit.bandwidth->size, 10u << 20);
    EXPECT_EQ(definition->disks[0].rate_limit.bandwidth->one_time_burst, 1u << 20);
    ASSERT_EQ(definition->nics.size(), 1u);
    EXPECT_EQ(definition->nics[0].rx_rate_limit.bandwidth->size, 2u << 20);
    // Written back in today's form, it reads as the same definition.
    EXPECT_EQ(MUST(parse_definition(to_toml(*definition))), *definition);
}

TEST(RestartPolicy, Names_RoundTrip) {
    for (auto const policy : { VmDefinition::RestartPolicy::Never, VmDefinition::RestartPolicy::OnFailure,
                               VmDefinition::RestartPolicy::Always })
        EXPECT_EQ(MUST(parse_restart_policy(restart_policy_name(policy))), policy);
    EXPECT_FALSE(parse_restart_policy("Always"));
}

TEST(KvmmArguments, HandTheMachineFileAndTheControlSockets) {
    auto const definition = MUST(parse_definition(FULL_DEFINITION));
    auto const arguments = kvmm_arguments(definition, "/usr/bin/kvmm", "/var/lib/kvmmd/runtime/web/machine.json",
                                          "/run/kvmm/web/api.sock", "/run/kvmm/web/con");
    // clang-format off
    std::vector<std::string> const expected {
        "/usr/bin/kvmm",
        "--config-file", "/var/lib/kvmmd/runtime/web/machine.json",
        "--id", "web-1.example",
        "--control-sock", "/run/kvmm/web/api.sock",
        "--console", "socket=/run/kvmm/web/con",
    };
    // clang-format on
    EXPECT_EQ(arguments, expected);
    // No device travels as a flag string any more.
    for (auto const* flag : { "--kernel", "--memory", "--disk", "--net", "--vsock", "--rng" })
        EXPECT_EQ(std::count(arguments.begin(), arguments.end(), flag), 0) << flag;
}

TEST(KvmmMachineFile, HoldsTheWholeTypedMachine) {
    auto const definition = MUST(parse_definition(FULL_DEFINITION));
    auto const text = kvmm_machine_file(definition);
    auto const loaded = load_config_file(text, ConfigDialect::Kvmm);
    ASSERT_TRUE(loaded) << loaded.error().message() << "\n" << text;
    auto const& vm = loaded->instance.vm;
    auto const expected = machine_config_of(definition);
    EXPECT_EQ(vm.kernel_path, "/var/lib/kvmm/vmlinux");
    EXPECT_EQ(vm.initrd_path, expected.initrd_path);
    EXPECT_EQ(vm.cmdline, "console=ttyS0 reboot=k");
    EXPECT_EQ(vm.vcpu_count, 2u);
    EXPECT_EQ(vm.memory_size, 1024ull << 20);
    EXPECT_EQ(vm.disks, definition.disks);
    EXPECT_EQ(vm.disks[0].cache, DiskConfig::CacheMode::WriteThrough);
    EXPECT_EQ(vm.disks[1].serial, "DATA1");
    EXPECT_EQ(vm.nets, definition.nics);
    EXPECT_EQ(vm.vsock, definition.vsock);
    EXPECT_TRUE(vm.rng);
}

TEST(KvmmMachineFile, MinimalDefinition_HasNoDevices) {
    auto const loaded = load_config_file(kvmm_machine_file(MUST(parse_definition(minimal("")))), ConfigDialect::Kvmm);
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_TRUE(loaded->instance.vm.disks.empty());
    EXPECT_TRUE(loaded->instance.vm.nets.empty());
    EXPECT_FALSE(loaded->instance.vm.vsock);
    EXPECT_FALSE(loaded->instance.vm.rng);
    EXPECT_EQ(loaded->instance.vm.cmdline, "");
    EXPECT_EQ(loaded->instance.vm.memory_size, 128ull << 20);
}

} // namespace
} // namespace kvmm

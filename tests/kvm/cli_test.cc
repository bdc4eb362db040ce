// Bad command-line input: each case must end kvmm with status 1 within a second and a
// one-line error that names the problem. None of these reach /dev/kvm.
#include "child_process.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace kvmm::testing {
namespace {

struct BadInput {
    std::vector<std::string> arguments;
    char const* keyword;
};

void expect_configuration_error(BadInput const& input) {
    std::vector<std::string> arguments { kvmm_binary() };
    arguments.insert(arguments.end(), input.arguments.begin(), input.arguments.end());
    auto const result = run_process(arguments, {}, std::chrono::seconds(5));
    std::string description;
    for (auto const& argument : input.arguments)
        description += argument.substr(0, 40) + " ";
    EXPECT_EQ(result.signal, 0) << description;
    EXPECT_EQ(result.exit_status, 1) << description << result.standard_error;
    EXPECT_LT(result.elapsed.count(), 1000) << description;
    EXPECT_NE(result.standard_error.find(input.keyword), std::string::npos)
        << description << ": " << result.standard_error;
    EXPECT_EQ(std::count(result.standard_error.begin(), result.standard_error.end(), '\n'), 1)
        << description << ": " << result.standard_error;
}

TEST(KvmmCommandLine, BadInputGetsOneLineErrorAndStatusOne) {
    std::string const kernel = test_guest();
    std::vector<BadInput> const cases {
        { { "--kernel", "/nonexistent/vmlinux" }, "/nonexistent/vmlinux" },
        { { "--kernel", "/dev/null" }, "not a regular file" },
        { { "--kernel", kernel, "--initrd", "/nonexistent/initrd" }, "initrd" },
        { { "--kernel", kernel, "--memory", "0" }, "memory size" },
        { { "--kernel", kernel, "--memory", "1K" }, "memory size" },
        { { "--kernel", kernel, "--memory", "100T" }, "memory size" },
        { { "--kernel", kernel, "--memory", "abc" }, "abc" },
        { { "--kernel", kernel, "--cpus", "0" }, "at least 1 vCPU" },
        { { "--kernel", kernel, "--cpus", "many" }, "cpus" },
        { { "--kernel", kernel, "--cmdline", std::string(70000, 'x') }, "command line" },
        { { "--kernel", kernel, "--console", "bogus" }, "bogus" },
        { { "--kernel", kernel, "--log-level", "loud" }, "loud" },
        { { "--kernel", kernel, "--frobnicate" }, "--frobnicate" },
        { {}, "--kernel" },
        // Paths with control characters (argv cannot carry a NUL, but everything else can).
        { { "--kernel", kernel + "\n" }, "--kernel" },
        { { "--kernel", kernel, "--initrd", "/tmp/initrd\x01" }, "--initrd" },
        { { "--kernel", kernel, "--disk", "path=/tmp/disk\x1b.img" }, "--disk path=" },
        { { "--kernel", kernel, "--vsock", "cid=3,uds=/tmp/v\t.sock" }, "--vsock uds=" },
        { { "--kernel", kernel, "--console", "file=/tmp/console\r.log" }, "--console file=" },
        { { "--api-sock", "/tmp/api\x7f.sock" }, "--api-sock" },
        { { "--api-sock", "/tmp/api.sock", "--config-file", "/tmp/config\n.json" }, "--config-file" },
        // Firecracker's flags, checked as Firecracker checks them.
        { { "--api-sock", "/tmp/api.sock", "--id", "a/b" }, "--id" },
        { { "--api-sock", "/tmp/api.sock", "--id", std::string(65, 'a') }, "--id" },
        { { "--api-sock", "/tmp/api.sock", "--level", "Loud" }, "Loud" },
        { { "--api-sock", "/tmp/api.sock", "--http-api-max-payload-size", "0" }, "payload" },
        { { "--kernel", kernel, "--log-path", "/tmp/kvmm.log" }, "--api-sock" },
        // The config library's validate() holds for flags as for the API: one TAP and one MAC
        // per interface, a balloon within guest memory.
        { { "--kernel", kernel, "--net", "tap=kvmmclitap0", "--net", "tap=kvmmclitap0" }, "already used" },
        { { "--kernel", kernel, "--net", "tap=kvmmclitap0,mac=02:00:00:00:00:01", "--net",
            "tap=kvmmclitap1,mac=02:00:00:00:00:01" },
          "already used" },
        { { "--kernel", kernel, "--net", "tap=kvmmclitap0123456" }, "longer than 15 bytes" },
        { { "--kernel", kernel, "--memory", "128M", "--balloon", "size=129M" }, "larger than the guest memory" },
        // kvmmd's form: the machine file describes the whole machine.
        { { "--control-sock", "/tmp/c.sock", "--config-file", "/tmp/machine.json", "--disk", "path=/d" },
          "--disk cannot be combined" },
        { { "--control-sock", "/tmp/c.sock", "--config-file", "/nonexistent/machine.json" }, "--config-file" },
        // Seccomp: a filter file that cannot be used stops kvmm before anything starts.
        { { "--kernel", kernel, "--seccomp-filter", "/nonexistent/filter.json" }, "/nonexistent/filter.json" },
        { { "--kernel", kernel, "--seccomp-filter", kernel }, "not valid JSON" },
        { { "--kernel", kernel, "--no-seccomp", "--seccomp-filter", kernel }, "contradict" },
    };
    for (auto const& input : cases)
        expect_configuration_error(input);
}

// --firmware: a missing, empty, oversized or misaligned image is refused before the VM starts.
TEST(KvmmCommandLine, BadFirmwareFilesGetOneLineErrorAndStatusOne) {
    char directory_template[] = "/tmp/kvmm-cli-firmware-XXXXXX";
    ASSERT_NE(::mkdtemp(directory_template), nullptr);
    std::filesystem::path const directory(directory_template);
    auto make = [&](char const* name, uintmax_t size) {
        auto const path = directory / name;
        std::ofstream(path).close();
        std::filesystem::resize_file(path, size);
        return path.string();
    };
    std::vector<BadInput> const cases {
        { { "--firmware", (directory / "missing.bin").string() }, "missing.bin" },
        { { "--firmware", make("empty.bin", 0) }, "is empty" },
        { { "--firmware", make("huge.bin", (16u << 20) + 4096) }, "more than the limit" },
        { { "--firmware", make("odd.bin", 65536 + 100) }, "not a multiple of 4 KiB" },
        { { "--firmware", "/dev/null" }, "not a regular file" },
        { { "--firmware", "/tmp/bios\x01.bin\x01" }, "--firmware" },
        { { "--firmware", make("ok.bin", 65536), "--initrd", "/tmp/initrd" }, "initrd needs a kernel" },
        { { "--api-sock", "/tmp/api.sock", "--firmware", make("ok2.bin", 65536) }, "--firmware" },
    };
    for (auto const& input : cases)
        expect_configuration_error(input);
    std::filesystem::remove_all(directory);
}

TEST(KvmmCommandLine, HelpAndVersionExitZero) {
    auto const help = run_process({ kvmm_binary(), "--help" });
    EXPECT_EQ(help.exit_status, 0);
    EXPECT_NE(help.standard_output.find("--kernel"), std::string::npos);
    auto const version = run_process({ kvmm_binary(), "--version" });
    EXPECT_EQ(version.exit_status, 0);
    EXPECT_NE(version.standard_output.find("kvmm"), std::string::npos);
}

} // namespace
} // namespace kvmm::testing

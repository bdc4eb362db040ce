// KVM tier: the kvmm binary runs the freestanding test guest on /dev/kvm and
// the tests check what the guest printed and how kvmm exited.
#include "child_process.h"

#include "backends/disk/write_log_format.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <span>
#include <sstream>
#include <unistd.h>

namespace kvmm::testing {
namespace {

class GuestTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto const reason = kvm_unavailable_reason();
        if (!reason.empty())
            GTEST_SKIP() << "KVM tier skipped: " << reason;
    }

    static ProcessResult boot(std::string const& cmdline, std::vector<std::string> extra = {},
                              std::string const& input = {}) {
        std::vector<std::string> arguments { kvmm_binary(), "--kernel", test_guest(), "--cmdline", cmdline };
        arguments.insert(arguments.end(), extra.begin(), extra.end());
        return run_process(arguments, input);
    }
};

void expect_clean_power_off(ProcessResult const& result, std::string const& final_line) {
    EXPECT_FALSE(result.timed_out) << result.standard_error;
    EXPECT_EQ(result.signal, 0);
    EXPECT_EQ(result.exit_status, 0) << result.standard_error;
    EXPECT_NE(result.standard_output.find(final_line), std::string::npos) << "stdout:\n"
                                                                          << result.standard_output << "\nstderr:\n"
                                                                          << result.standard_error;
    EXPECT_EQ(result.standard_output.find("FAIL"), std::string::npos) << result.standard_output;
}

TEST_F(GuestTest, HelloPrintsFirstLineAndPowersOff) {
    auto const result = boot("test=hello");
    expect_clean_power_off(result, "kvmm-test: hello ok");
    EXPECT_EQ(result.standard_output.rfind("kvmm-test-guest: hello\n", 0), 0u) << result.standard_output;
}

TEST_F(GuestTest, BootMarkerIsLoggedAtInfoLevel) {
    auto const result = boot("test=hello", { "--log-level", "info" });
    expect_clean_power_off(result, "kvmm-test: hello ok");
    EXPECT_NE(result.standard_error.find("guest boot marker 1:"), std::string::npos) << result.standard_error;
    EXPECT_NE(result.standard_error.find("guest powered off"), std::string::npos) << result.standard_error;
}

TEST_F(GuestTest, PortAndMmioExitsRtcAndI8042Work) {
    auto const result = boot("test=io");
    expect_clean_power_off(result, "kvmm-test: io ok");
    EXPECT_NE(result.standard_output.find("io: rtc 20"), std::string::npos);
}

TEST_F(GuestTest, SerialAndTimerInterruptsArriveThroughTheIoapic) {
    expect_clean_power_off(boot("test=irq"), "kvmm-test: irq ok");
}

class SmpTest : public GuestTest, public ::testing::WithParamInterface<int> {};

TEST_P(SmpTest, EveryVcpuComesOnline) {
    int const cpus = GetParam();
    auto const result = boot("test=smp cpus=" + std::to_string(cpus), { "--cpus", std::to_string(cpus) });
    expect_clean_power_off(result, "smp: " + std::to_string(cpus) + " cpus online");
    for (int id = 1; id < cpus; ++id)
        EXPECT_NE(result.standard_output.find("cpu " + std::to_string(id) + " online"), std::string::npos) << id;
}

INSTANTIATE_TEST_SUITE_P(VcpuCounts, SmpTest, ::testing::Values(1, 2, 4, 8));

TEST_F(GuestTest, SerialInputIsEchoedByTheGuest) {
    auto const result = boot("test=echo", {}, "first line\nsecond\nquit\n");
    expect_clean_power_off(result, "kvmm-test: echo ok");
    EXPECT_NE(result.standard_output.find("echo: first line\n"), std::string::npos) << result.standard_output;
    EXPECT_NE(result.standard_output.find("echo: second\n"), std::string::npos);
}

TEST_F(GuestTest, MemoryAcrossThe32BitGapIsInTheMemoryMap) {
    // 5 GiB: 3 GiB below the gap (less the legacy hole) and 2 GiB from 4 GiB.
    auto const result = boot("test=memory", { "--memory", "5G" });
    expect_clean_power_off(result, "memory: 5119 MiB in the memory map");
    auto const small = boot("test=memory", { "--memory", "64M" });
    expect_clean_power_off(small, "memory: 63 MiB in the memory map");
}

TEST_F(GuestTest, EntropyDeviceServesTheGuestThroughIoeventfdAndIrqfd) {
    expect_clean_power_off(boot("test=virtio-rng", { "--rng" }), "kvmm-test: virtio-rng ok");
}

TEST_F(GuestTest, VirtioConsoleCarriesTheGuestsOutput) {
    auto const result = boot("test=virtio-console", { "--console-device", "virtio" });
    expect_clean_power_off(result, "kvmm-test: hello through hvc0");
    EXPECT_EQ(result.standard_output.find("kvmm-test-guest"), std::string::npos)
        << "the serial port's output must not reach the console";
}

class DiskGuestTest : public GuestTest {
protected:
    void SetUp() override {
        GuestTest::SetUp();
        char pattern[] = "/tmp/kvmm-disk-test-XXXXXX";
        int fd = ::mkstemp(pattern);
        ASSERT_GE(fd, 0);
        m_path = pattern;
        std::string contents(1 << 20, '\0');
        contents.replace(0, 14, "KVMM-DISK-TEST");
        ASSERT_EQ(::write(fd, contents.data(), contents.size()), static_cast<ssize_t>(contents.size()));
        ::close(fd);
    }
    void TearDown() override {
        if (!m_path.empty())
            ::unlink(m_path.c_str());
    }
    std::string sector(int index) const {
        std::ifstream file(m_path, std::ios::binary);
        std::string bytes(512, '\0');
        file.seekg(index * 512);
        file.read(bytes.data(), 512);
        return bytes;
    }
    std::string m_path;
};

TEST_F(DiskGuestTest, GuestReadsWritesAndFlushesAVirtioDisk) {
    auto const result = boot("test=virtio-blk", { "--disk", "path=" + m_path + ",serial=kvmm-serial-1" });
    expect_clean_power_off(result, "kvmm-test: virtio-blk ok");
    EXPECT_NE(result.standard_output.find("virtio-blk: serial kvmm-serial-1"), std::string::npos);
    EXPECT_EQ(sector(1).rfind("written by the guest", 0), 0u) << "the guest's write is in the image file";
}

// --disk ...,record=LOG: the guest's write of sector 1 and its flush are in the recording, in
// that order, and kvmm-crash-check finds every crash state of it consistent.
TEST_F(DiskGuestTest, RecordingHasTheGuestsWriteAndTheFlushThatCoversIt) {
    std::string const base = m_path + ".base", log = m_path + ".log";
    ASSERT_EQ(std::system(("cp '" + m_path + "' '" + base + "'").c_str()), 0);
    auto const result = boot("test=virtio-blk", { "--disk", "path=" + m_path + ",engine=sync,record=" + log });
    expect_clean_power_off(result, "kvmm-test: virtio-blk ok");
    std::ifstream file(log, std::ios::binary);
    std::string const bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    auto const parsed = parse_write_log(std::as_bytes(std::span(bytes.data(), bytes.size())));
    ASSERT_TRUE(parsed) << parsed.error().message();
    ASSERT_EQ(parsed->records.size(), 2u);
    EXPECT_EQ(parsed->records[0].type, WriteLogRecordType::Write);
    EXPECT_EQ(parsed->records[0].sector, 1u);
    std::string const data(reinterpret_cast<char const*>(parsed->records[0].data.data()),
                           parsed->records[0].data.size());
    EXPECT_EQ(data.rfind("written by the guest", 0), 0u);
    EXPECT_EQ(parsed->records[1].type, WriteLogRecordType::Flush);
    EXPECT_EQ(parsed->records[1].flush_covers, 1u);
    auto const check = run_process(
        { KVMM_CRASH_CHECK_BINARY, "--base", base, "--log", log, "--check-command", "cmp -s -n 512 \"$1\" " + base });
    ::unlink(base.c_str());
    ::unlink(log.c_str());
    // The only difference from the base the states can show is sector 1, which cmp -n 512
    // does not compare: every state passes.
    EXPECT_EQ(check.exit_status, 0) << check.standard_output << check.standard_error;
    EXPECT_NE(check.standard_output.find("crash states checked (2 records, 1 flush points, seed 1): 0 failed"),
              std::string::npos)
        << check.standard_output;
}

TEST_F(DiskGuestTest, ReadOnlyDiskRefusesTheGuestsWriteAndKeepsTheFile) {
    auto const before = sector(1);
    auto const result = boot("test=virtio-blk readonly=1", { "--disk", "path=" + m_path + ",readonly=on,engine=sync" });
    expect_clean_power_off(result, "kvmm-test: virtio-blk ok");
    EXPECT_EQ(sector(1), before);
}

// The block scenario on a qcow2 overlay of the raw image: the guest reads the base's first
// sector through the overlay, its write lands in the overlay, and the base is unchanged.
TEST_F(DiskGuestTest, GuestUsesAQcow2OverlayOfARawBase) {
    if (std::system("qemu-img --version >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "qemu-img is not installed (Debian package qemu-utils; tools/install-deps.sh installs it)";
    std::string const overlay = m_path + ".qcow2";
    std::string const flattened = m_path + ".flat";
    ASSERT_EQ(std::system(("qemu-img create -q -f qcow2 -F raw -b '" + m_path + "' '" + overlay + "'").c_str()), 0);
    auto const base_before = sector(1);
    auto const result = boot("test=virtio-blk", { "--disk", "path=" + overlay + ",format=qcow2" });
    expect_clean_power_off(result, "kvmm-test: virtio-blk ok");
    EXPECT_EQ(sector(1), base_before) << "the base image must not change";
    EXPECT_EQ(std::system(("qemu-img check -q -f qcow2 '" + overlay + "'").c_str()), 0);
    ASSERT_EQ(std::system(("qemu-img convert -f qcow2 -O raw '" + overlay + "' '" + flattened + "'").c_str()), 0);
    std::ifstream file(flattened, std::ios::binary);
    std::string bytes(1024, '\0');
    file.read(bytes.data(), 1024);
    EXPECT_EQ(bytes.rfind("KVMM-DISK-TEST", 0), 0u);
    EXPECT_EQ(bytes.substr(512).rfind("written by the guest", 0), 0u) << "the guest's write is in the overlay";
    ::unlink(overlay.c_str());
    ::unlink(flattened.c_str());
}

TEST_F(DiskGuestTest, MissingDiskImageIsAConfigurationError) {
    auto const result = boot("test=hello", { "--disk", "path=/nonexistent/disk.img" });
    EXPECT_EQ(result.exit_status, 1);
    EXPECT_NE(result.standard_error.find("/nonexistent/disk.img"), std::string::npos) << result.standard_error;
}

TEST_F(DiskGuestTest, ImageInUseByAnotherWriterIsRefused) {
    auto const result = boot("test=hello", { "--disk", "path=" + m_path, "--disk", "path=" + m_path + ",id=again" });
    EXPECT_EQ(result.exit_status, 1);
    EXPECT_NE(result.standard_error.find("lock"), std::string::npos) << result.standard_error;
}

TEST_F(GuestTest, ResetEndsKvmmWithStatusZero) {
    auto const result = boot("test=reset", { "--log-level", "info" });
    expect_clean_power_off(result, "kvmm-test: resetting");
    EXPECT_NE(result.standard_error.find("guest reset"), std::string::npos) << result.standard_error;
}

TEST_F(GuestTest, TripleFaultEndsKvmmWithStatusTwoAndRegisterDump) {
    auto const result = boot("test=triple-fault");
    EXPECT_FALSE(result.timed_out);
    EXPECT_EQ(result.exit_status, 2) << result.standard_error;
    EXPECT_NE(result.standard_error.find("triple fault"), std::string::npos) << result.standard_error;
    EXPECT_NE(result.standard_error.find("rip="), std::string::npos) << result.standard_error;
}

TEST_F(GuestTest, ConsoleFileReceivesOutputAndStdoutStaysEmpty) {
    std::string const path = ::testing::TempDir() + "kvmm-console-test.log";
    auto const result = boot("test=hello", { "--console", "file=" + path });
    EXPECT_EQ(result.exit_status, 0) << result.standard_error;
    EXPECT_TRUE(result.standard_output.empty());
    std::ifstream file(path);
    std::stringstream content;
    content << file.rdbuf();
    EXPECT_NE(content.str().find("kvmm-test: hello ok"), std::string::npos);
    std::remove(path.c_str());
}

TEST_F(GuestTest, ConsoleNoneDiscardsOutput) {
    auto const result = boot("test=hello", { "--console", "none" });
    EXPECT_EQ(result.exit_status, 0) << result.standard_error;
    EXPECT_TRUE(result.standard_output.empty());
}

TEST_F(GuestTest, GarbageAndTruncatedKernelsAreRejectedQuickly) {
    std::string const garbage_path = ::testing::TempDir() + "kvmm-garbage-kernel";
    std::string const truncated_path = ::testing::TempDir() + "kvmm-truncated-kernel";
    {
        std::ofstream garbage(garbage_path, std::ios::binary);
        for (int i = 0; i < 65536; ++i)
            garbage.put(static_cast<char>(i * 7919 % 251));
        std::ifstream guest(test_guest(), std::ios::binary);
        std::ofstream truncated(truncated_path, std::ios::binary);
        std::vector<char> head(100);
        guest.read(head.data(), static_cast<std::streamsize>(head.size()));
        truncated.write(head.data(), guest.gcount());
    }
    for (auto const& [path, keyword] : { std::pair { garbage_path, "neither" }, std::pair { truncated_path, "ELF" } }) {
        auto const result = run_process({ kvmm_binary(), "--kernel", path });
        EXPECT_EQ(result.exit_status, 1) << result.standard_error;
        EXPECT_LT(result.elapsed.count(), 1000);
        EXPECT_NE(result.standard_error.find(keyword), std::string::npos) << result.standard_error;
    }
    std::remove(garbage_path.c_str());
    std::remove(truncated_path.c_str());
}

TEST_F(GuestTest, MoreVcpusThanKvmAllowsIsAConfigurationError) {
    auto const result = run_process({ kvmm_binary(), "--kernel", test_guest(), "--cpus", "100000" });
    EXPECT_EQ(result.exit_status, 1);
    EXPECT_NE(result.standard_error.find("100000"), std::string::npos) << result.standard_error;
}

} // namespace
} // namespace kvmm::testing

// KVM tier: kvmm's own footprint. With the test guest running (1 vCPU, 64 MiB), kvmm's peak
// resident set stays under a bound that the static link keeps (docs/ARCHITECTURE.md, "Start-up
// and memory": 3.9 MiB measured, of which 0.4 MiB is guest RAM the loader and guest wrote), and
// the static kvmm has no program interpreter, so nothing is loaded or relocated by ld.so.
#include "child_process.h"
#include "kvmm_process.h"

#include <gtest/gtest.h>

#include <elf.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace kvmm::testing {
namespace {

using namespace std::chrono_literals;

#if KVMM_STATIC_KVMM_BUILD && defined(NDEBUG)
// 3.9 MiB measured (release); the margin covers a larger guest image or a few more heap
// pages, not the 6.7 MiB of a dynamically linked kvmm.
constexpr uint64_t PEAK_RSS_BOUND_KIB = 4608;
#elif defined(NDEBUG)
constexpr uint64_t PEAK_RSS_BOUND_KIB = 8192; // -DKVMM_STATIC_KVMM=OFF: 6.7 MiB measured
#else
constexpr uint64_t PEAK_RSS_BOUND_KIB = 16384; // unoptimised code touches more text: a loose guard
#endif

class FootprintTest : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/kvmm-footprint-test-XXXXXX";
        m_directory = ::mkdtemp(pattern);
    }
    void TearDown() override {
        if (!m_directory.empty())
            std::filesystem::remove_all(m_directory);
    }
    std::filesystem::path m_directory;
};

TEST_F(FootprintTest, KvmmRunningAGuestStaysUnderItsPeakResidentBound) {
    auto const reason = kvm_unavailable_reason();
    if (!reason.empty())
        GTEST_SKIP() << "KVM tier skipped: " << reason;
    KvmmProcess kvmm({ kvmm_binary(), "--kernel", test_guest(), "--cmdline", "test=idle", "--memory", "64M" },
                     m_directory);
    ASSERT_TRUE(eventually([&] { return kvmm.output().find("kvmm-test: idle") != std::string::npos; }))
        << "output: " << kvmm.output() << "\nlog: " << kvmm.log();
    auto const peak_rss = kvmm.peak_rss_kib();
    std::printf("[ measured ] kvmm peak RSS %llu KiB (bound %llu KiB)\n", static_cast<unsigned long long>(peak_rss),
                static_cast<unsigned long long>(PEAK_RSS_BOUND_KIB));
    EXPECT_GT(peak_rss, 0u);
    EXPECT_LT(peak_rss, PEAK_RSS_BOUND_KIB);
}

#if KVMM_STATIC_KVMM_BUILD
TEST(StaticKvmm, HasNoProgramInterpreterAndIsPositionIndependent) {
    std::ifstream file(kvmm_binary(), std::ios::binary);
    ASSERT_TRUE(file) << kvmm_binary();
    Elf64_Ehdr header {};
    ASSERT_TRUE(file.read(reinterpret_cast<char*>(&header), sizeof(header)));
    ASSERT_EQ(std::memcmp(header.e_ident, ELFMAG, SELFMAG), 0);
    // ET_DYN: a static PIE, so the kernel still randomises where kvmm's code lies.
    EXPECT_EQ(header.e_type, ET_DYN);
    for (uint16_t index = 0; index < header.e_phnum; ++index) {
        Elf64_Phdr program {};
        file.seekg(static_cast<std::streamoff>(header.e_phoff + uint64_t { index } * header.e_phentsize));
        ASSERT_TRUE(file.read(reinterpret_cast<char*>(&program), sizeof(program)));
        EXPECT_NE(program.p_type, static_cast<uint32_t>(PT_INTERP)) << "program header " << index;
    }
}
#endif

} // namespace
} // namespace kvmm::testing

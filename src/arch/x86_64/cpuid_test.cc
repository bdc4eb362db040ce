#include "arch/x86_64/cpuid.h"

#include <gtest/gtest.h>

namespace kvmm::x86_64 {
namespace {

std::vector<CpuidEntry> supported() {
    return {
        { 0x0, 0, 0, 0x1f, 0, 0, 0 },   { 0x1, 0, 0, 0x806f8, 0x00010800, 0x7ffafbbf, 0x0f8bfbff },
        { 0x4, 0, 1, 0x121, 0, 0, 0 }, // L1
        { 0x4, 3, 1, 0x163, 0, 0, 0 }, // L3
        { 0xb, 0, 1, 1, 2, 0x100, 0 },  { 0xb, 1, 1, 4, 8, 0x201, 0 },
        { 0x1f, 0, 1, 1, 2, 0x100, 0 }, { 0x40000000, 0, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d },
    };
}

CpuidEntry const* find(std::vector<CpuidEntry> const& entries, uint32_t function, uint32_t index) {
    for (auto const& entry : entries) {
        if (entry.function == function && entry.index == index)
            return &entry;
    }
    return nullptr;
}

TEST(BuildCpuid, LeafOneCarriesApicIdCountAndHypervisorBit) {
    for (uint32_t count : { 1u, 2u, 4u, 6u }) {
        for (uint32_t index = 0; index < count; ++index) {
            auto const entries = build_cpuid(supported(), index, count);
            auto const* leaf = find(entries, 1, 0);
            ASSERT_NE(leaf, nullptr);
            EXPECT_EQ(leaf->ebx >> 24, index);
            EXPECT_EQ((leaf->ebx >> 16) & 0xff, count);
            EXPECT_EQ((leaf->ebx >> 8) & 0xff, 0x08u); // CLFLUSH size kept
            EXPECT_TRUE(leaf->ecx & (1u << 31));
            EXPECT_EQ(bool(leaf->edx & (1u << 28)), count > 1);
        }
    }
}

TEST(BuildCpuid, ExtendedTopologyDescribesOnePackageOfCores) {
    auto const entries = build_cpuid(supported(), 5, 6);
    auto const* smt = find(entries, 0xb, 0);
    auto const* core = find(entries, 0xb, 1);
    auto const* end = find(entries, 0xb, 2);
    ASSERT_TRUE(smt && core && end);
    EXPECT_EQ(smt->eax, 0u);
    EXPECT_EQ(smt->ebx, 1u);
    EXPECT_EQ(core->eax, 3u); // 6 cores need 3 bits of APIC ID
    EXPECT_EQ(core->ebx, 6u);
    EXPECT_EQ((core->ecx >> 8) & 0xff, 2u);
    EXPECT_EQ(core->edx, 5u);
    EXPECT_EQ((end->ecx >> 8) & 0xff, 0u);
    EXPECT_NE(find(entries, 0x1f, 1), nullptr);
}

// Firecracker's smt: true - pairs of consecutive vCPUs are the two threads of one core.
TEST(BuildCpuid, TwoThreadsPerCoreMakeSiblingPairs) {
    auto const entries = build_cpuid(supported(), 5, 6, 2);
    auto const* smt = find(entries, 0xb, 0);
    auto const* core = find(entries, 0xb, 1);
    ASSERT_TRUE(smt && core);
    EXPECT_EQ(smt->eax, 1u); // one APIC ID bit numbers the thread
    EXPECT_EQ(smt->ebx, 2u);
    EXPECT_EQ((smt->ecx >> 8) & 0xff, 1u);
    EXPECT_EQ(core->eax, 3u); // thread bit plus 2 bits for 3 cores
    EXPECT_EQ(core->ebx, 6u);
    EXPECT_EQ(smt->edx, 5u);
    auto const* l1 = find(entries, 4, 0);
    auto const* l3 = find(entries, 4, 3);
    ASSERT_TRUE(l1 && l3);
    EXPECT_EQ(l1->eax >> 26, 3u);           // 3 cores need IDs 0..3
    EXPECT_EQ((l1->eax >> 14) & 0xfff, 1u); // L1 shared by the core's 2 threads
    EXPECT_EQ((l3->eax >> 14) & 0xfff, 7u); // L3 shared by the package
    // One vCPU stays one thread.
    auto const single = build_cpuid(supported(), 0, 1, 2);
    EXPECT_EQ(find(single, 0xb, 0)->ebx, 1u);
}

TEST(BuildCpuid, CacheLeafReportsCoresPerPackage) {
    auto const entries = build_cpuid(supported(), 0, 4);
    auto const* l1 = find(entries, 4, 0);
    auto const* l3 = find(entries, 4, 3);
    ASSERT_TRUE(l1 && l3);
    EXPECT_EQ(l1->eax >> 26, 3u);
    EXPECT_EQ((l1->eax >> 14) & 0xfff, 0u);
    EXPECT_EQ((l3->eax >> 14) & 0xfff, 3u);
    EXPECT_EQ(l1->eax & 0x3fff, 0x121u);
}

TEST(BuildCpuid, ParavirtLeavesPassThrough) {
    auto const entries = build_cpuid(supported(), 0, 1);
    auto const* kvm = find(entries, 0x40000000, 0);
    ASSERT_NE(kvm, nullptr);
    EXPECT_EQ(kvm->ebx, 0x4b4d564bu);
}

} // namespace
} // namespace kvmm::x86_64

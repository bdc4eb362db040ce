#include "vmm/host_capacity.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

VmConfig machine(uint64_t memory_size, uint32_t vcpus) {
    VmConfig config;
    config.memory_size = memory_size;
    config.vcpu_count = vcpus;
    return config;
}

constexpr HostCapacity HOST_24_GIB_8_CPUS { .memory_bytes = 24ull << 30, .cpus = 8 };

TEST(HostCapacity, TerabyteThirtyTwoVcpuMachineOnASmallHostWarnsAboutBoth) {
    auto const warnings = host_capacity_warnings(machine(1ull << 40, 32), HOST_24_GIB_8_CPUS);
    ASSERT_EQ(warnings.size(), 2u);
    EXPECT_NE(warnings[0].find("guest memory 1048576 MiB is more than this host's RAM (24576 MiB)"), std::string::npos)
        << warnings[0];
    EXPECT_NE(warnings[1].find("32 vCPUs are more than the 8 host CPUs"), std::string::npos) << warnings[1];
}

TEST(HostCapacity, MachineThatFitsWarnsAboutNothing) {
    EXPECT_TRUE(host_capacity_warnings(machine(24ull << 30, 8), HOST_24_GIB_8_CPUS).empty());
    EXPECT_TRUE(host_capacity_warnings(machine(512ull << 20, 1), HOST_24_GIB_8_CPUS).empty());
}

TEST(HostCapacity, UnknownHostValuesAreNotCompared) {
    EXPECT_TRUE(host_capacity_warnings(machine(1ull << 40, 255), HostCapacity {}).empty());
}

TEST(HostCapacity, ThisHostIsReadWithRamAndAtLeastOneCpu) {
    auto const host = read_host_capacity();
    EXPECT_GT(host.memory_bytes, 16ull << 20);
    EXPECT_GE(host.cpus, 1u);
}

} // namespace
} // namespace kvmm

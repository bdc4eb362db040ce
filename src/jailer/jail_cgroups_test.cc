#include "jailer/jail_cgroups.h"

#include <gtest/gtest.h>

namespace kvmm::jailer {
namespace {

constexpr char HYBRID_MOUNTS[] = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n"
                                 "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,relatime,cpu,cpuacct 0 0\n"
                                 "cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n"
                                 "cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,xattr,name=systemd 0 0\n"
                                 "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";

TEST(CgroupMounts, VersionOneControllersComeFromTheMountOptions) {
    auto const mounts = parse_cgroup_mounts(HYBRID_MOUNTS);
    ASSERT_EQ(mounts.size(), 4u);
    EXPECT_EQ(mounts[0].path, "/sys/fs/cgroup/cpu,cpuacct");
    EXPECT_EQ(mounts[0].controllers, (std::vector<std::string> { "cpu", "cpuacct" }));
    EXPECT_EQ(mounts[1].controllers, (std::vector<std::string> { "pids" }));
    EXPECT_TRUE(mounts[2].controllers.empty() || mounts[2].controllers == std::vector<std::string> { "xattr" });
    EXPECT_EQ(mounts[3].version, 2);
    EXPECT_EQ(mounts[3].path, "/sys/fs/cgroup/unified");
}

JailerOptions options_with(std::vector<CgroupSetting> settings, int version) {
    JailerOptions options;
    options.id = "vm";
    options.exec_file = "/usr/bin/kvmm";
    options.cgroups = std::move(settings);
    options.cgroup_version = version;
    return options;
}

TEST(CgroupPlan, ControllerThatNoHierarchyOffersIsRefused) {
    auto const planned = JailCgroups::plan(options_with({ { "memory.limit_in_bytes", "1" } }, 1), HYBRID_MOUNTS);
    ASSERT_FALSE(planned.has_value());
    EXPECT_NE(planned.error().message().find("no cgroup v1 hierarchy has the 'memory' controller"), std::string::npos)
        << planned.error().message();
}

TEST(CgroupPlan, VersionTwoWithoutAUnifiedMountIsRefused) {
    auto const planned =
        JailCgroups::plan(options_with({ { "pids.max", "1" } }, 2), "cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n");
    ASSERT_FALSE(planned.has_value());
    EXPECT_NE(planned.error().message().find("no cgroup2 file system is mounted"), std::string::npos);
}

TEST(CgroupPlan, NoCgroupFlagMeansNoCgroup) {
    auto const planned = MUST(JailCgroups::plan(options_with({}, 1), HYBRID_MOUNTS));
    EXPECT_TRUE(planned.directories().empty());
}

} // namespace
} // namespace kvmm::jailer

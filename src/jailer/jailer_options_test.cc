#include "jailer/jailer_options.h"

#include <gtest/gtest.h>

namespace kvmm::jailer {
namespace {

std::vector<std::string> minimal() {
    return { "--id", "vm-1", "--exec-file", "/usr/bin/kvmm", "--uid", "123", "--gid", "100" };
}

std::vector<std::string> with(std::vector<std::string> extra) {
    auto arguments = minimal();
    arguments.insert(arguments.end(), extra.begin(), extra.end());
    return arguments;
}

std::string error_of(std::vector<std::string> const& arguments) {
    auto parsed = parse_command_line(arguments);
    EXPECT_FALSE(parsed.has_value());
    return parsed ? std::string() : parsed.error().message();
}

TEST(JailerOptions, MinimalCommandLineTakesFirecrackersDefaults) {
    auto const parsed = MUST(parse_command_line(minimal()));
    EXPECT_EQ(parsed.request, JailerRequest::Run);
    auto const& options = parsed.options;
    EXPECT_EQ(options.id, "vm-1");
    EXPECT_EQ(options.exec_file, "/usr/bin/kvmm");
    EXPECT_EQ(options.exec_name(), "kvmm");
    EXPECT_EQ(options.uid, 123u);
    EXPECT_EQ(options.gid, 100u);
    EXPECT_EQ(options.chroot_base, "/srv/jailer");
    EXPECT_EQ(options.cgroup_version, 1);
    EXPECT_EQ(options.cgroup_parent(), "kvmm");
    EXPECT_FALSE(options.netns.has_value());
    EXPECT_FALSE(options.daemonize);
    EXPECT_FALSE(options.new_pid_ns);
    EXPECT_FALSE(options.joins_cgroup());
    EXPECT_TRUE(options.exec_arguments.empty());
}

TEST(JailerOptions, EveryFlagIsParsedInBothSpellings) {
    auto const parsed = MUST(parse_command_line({ "--id=a-B-9",
                                                  "--exec-file=/opt/kvmm",
                                                  "--uid=5",
                                                  "--gid",
                                                  "6",
                                                  "--chroot-base-dir",
                                                  "/var/jail/",
                                                  "--netns=/var/run/netns/vm",
                                                  "--daemonize",
                                                  "--new-pid-ns",
                                                  "--cgroup",
                                                  "cpuset.cpus=0-1",
                                                  "--cgroup=pids.max=50",
                                                  "--cgroup-version",
                                                  "2",
                                                  "--parent-cgroup=vms/external",
                                                  "--resource-limit",
                                                  "fsize=1000",
                                                  "--resource-limit=no-file=64",
                                                  "--",
                                                  "--api-sock",
                                                  "/api.sock",
                                                  "--daemonize" }));
    auto const& options = parsed.options;
    EXPECT_EQ(options.id, "a-B-9");
    EXPECT_EQ(options.chroot_base, "/var/jail"); // trailing slash dropped
    EXPECT_EQ(options.netns, "/var/run/netns/vm");
    EXPECT_TRUE(options.daemonize);
    EXPECT_TRUE(options.new_pid_ns);
    ASSERT_EQ(options.cgroups.size(), 2u);
    EXPECT_EQ(options.cgroups[0], (CgroupSetting { "cpuset.cpus", "0-1" }));
    EXPECT_EQ(options.cgroups[1].controller(), "pids");
    EXPECT_EQ(options.cgroups[1].value, "50");
    EXPECT_EQ(options.cgroup_version, 2);
    EXPECT_EQ(options.cgroup_parent(), "vms/external");
    ASSERT_EQ(options.resource_limits.size(), 2u);
    EXPECT_EQ(options.resource_limits[0], (ResourceLimit { Resource::FileSize, 1000 }));
    EXPECT_EQ(options.resource_limits[1], (ResourceLimit { Resource::OpenFiles, 64 }));
    // Everything after "--" is kvmm's, even a jailer flag name.
    EXPECT_EQ(options.exec_arguments, (std::vector<std::string> { "--api-sock", "/api.sock", "--daemonize" }));
}

TEST(JailerOptions, HelpAndVersionNeedNoOtherFlag) {
    EXPECT_EQ(MUST(parse_command_line({ "--help" })).request, JailerRequest::Help);
    EXPECT_EQ(MUST(parse_command_line({ "--version" })).request, JailerRequest::Version);
}

TEST(JailerOptions, EachRequiredFlagIsNamedWhenMissing) {
    for (std::string const flag : { "--id", "--exec-file", "--uid", "--gid" }) {
        std::vector<std::string> arguments;
        auto const all = minimal();
        for (size_t index = 0; index < all.size(); index += 2)
            if (all[index] != flag) {
                arguments.push_back(all[index]);
                arguments.push_back(all[index + 1]);
            }
        EXPECT_EQ(error_of(arguments), flag + " is required");
    }
}

TEST(JailerOptions, RepeatedSingleFlagIsAConflict) {
    EXPECT_EQ(error_of(with({ "--id", "other" })), "--id is given more than once");
    EXPECT_EQ(error_of(with({ "--daemonize", "--daemonize" })), "--daemonize is given more than once");
    EXPECT_NE(error_of(with({ "--resource-limit", "no-file=10", "--resource-limit", "no-file=20" }))
                  .find("already limited to 10"),
              std::string::npos);
    EXPECT_EQ(error_of(with({ "--cgroup", "pids.max=1", "--cgroup", "pids.max=2" })),
              "--cgroup pids.max is given more than once");
}

TEST(JailerOptions, UnknownFlagsAndMissingValuesAreRefused) {
    EXPECT_NE(error_of(with({ "--api-sock", "/x" })).find("unknown argument '--api-sock'"), std::string::npos);
    EXPECT_EQ(error_of({ "--id" }), "--id needs a value");
    EXPECT_EQ(error_of(with({ "--daemonize=yes" })), "--daemonize takes no value (got 'yes')");
}

TEST(JailerOptions, IdFollowsFirecrackersRule) {
    EXPECT_TRUE(check_id("551e7604-e35c-42b3-b825-416853441234").has_value());
    EXPECT_TRUE(check_id(std::string(64, 'a')).has_value());
    EXPECT_NE(check_id(std::string(65, 'a')).error().message().find("65 characters"), std::string::npos);
    EXPECT_NE(check_id("").error().message().find("empty"), std::string::npos);
    for (std::string const bad : { "a/b", "..", "a.b", "a_b", "a b", "vm\n1", "/etc" })
        EXPECT_FALSE(check_id(bad).has_value()) << bad;
    EXPECT_NE(error_of({ "--id", "../../etc" }).find("contains '.'"), std::string::npos);
}

TEST(JailerOptions, RootNeedsAllowRoot) {
    EXPECT_NE(error_of({ "--id", "a", "--exec-file", "/k", "--uid", "0", "--gid", "100" }).find("--allow-root"),
              std::string::npos);
    EXPECT_NE(error_of({ "--id", "a", "--exec-file", "/k", "--uid", "100", "--gid", "0" }).find("--allow-root"),
              std::string::npos);
    auto const allowed =
        MUST(parse_command_line({ "--id", "a", "--exec-file", "/k", "--uid", "0", "--gid", "0", "--allow-root" }));
    EXPECT_TRUE(allowed.options.allow_root);
}

TEST(JailerOptions, UidAndGidMustBeNumbersInRange) {
    EXPECT_NE(error_of({ "--uid", "nobody" }).find("'nobody' is not a decimal number"), std::string::npos);
    EXPECT_NE(error_of({ "--gid", "-1" }).find("not a decimal number"), std::string::npos);
    EXPECT_NE(error_of({ "--uid", "4294967295" }).find("out of range"), std::string::npos);
}

TEST(JailerOptions, PathsMustBeAbsoluteAndPrintable) {
    // The exec file may be relative to the working directory (Firecracker accepts that too).
    EXPECT_EQ(MUST(parse_command_line({ "--id", "a", "--exec-file", "bin/kvmm", "--uid", "1", "--gid", "1" }))
                  .options.exec_name(),
              "kvmm");
    EXPECT_NE(error_of({ "--exec-file", "" }).find("does not name a file"), std::string::npos);
    EXPECT_NE(error_of({ "--exec-file", "/usr/bin/" }).find("does not name a file"), std::string::npos);
    EXPECT_NE(error_of({ "--chroot-base-dir", "srv" }).find("not an absolute path"), std::string::npos);
    EXPECT_NE(error_of({ "--netns", std::string("/run/netns/a\0b", 14) }).find("\\x00"), std::string::npos);
    EXPECT_EQ(error_of(with({ "--chroot-base-dir", "/" })), "--chroot-base-dir: '/' cannot be the chroot base");
}

TEST(JailerOptions, CgroupSettingsAreControlFileAssignments) {
    EXPECT_EQ(MUST(parse_cgroup_setting("cpu.cfs_quota_us=5000")), (CgroupSetting { "cpu.cfs_quota_us", "5000" }));
    EXPECT_EQ(MUST(parse_cgroup_setting("memory.max=1 2")).value, "1 2");
    for (std::string const bad : { "pids.max", "pidsmax=1", ".max=1", "pids.=1", "../pids.max=1", "pids/x.max=1",
                                   "Pids.max=1", "pids.max=", "pids.max=1\n2" })
        EXPECT_FALSE(parse_cgroup_setting(bad).has_value()) << bad;
}

TEST(JailerOptions, ParentCgroupIsARelativePathOfPlainComponents) {
    EXPECT_TRUE(check_relative_cgroup_path("all_uvms/external_uvms").has_value());
    for (std::string const bad : { "/abs", "a/../b", "..", "a//b", "a/", "./a", "" })
        EXPECT_FALSE(check_relative_cgroup_path(bad).has_value()) << bad;
}

TEST(JailerOptions, ParentCgroupAloneNeedsVersionTwo) {
    EXPECT_NE(error_of(with({ "--parent-cgroup", "vms" })).find("--cgroup-version 2"), std::string::npos);
    auto const parsed = MUST(parse_command_line(with({ "--parent-cgroup", "vms", "--cgroup-version", "2" })));
    EXPECT_TRUE(parsed.options.joins_cgroup());
    EXPECT_NE(error_of(with({ "--cgroup-version", "3" })).find("neither 1 nor 2"), std::string::npos);
}

TEST(JailerOptions, ResourceLimitsAreFsizeOrNoFile) {
    EXPECT_EQ(MUST(parse_resource_limit("no-file=1024")), (ResourceLimit { Resource::OpenFiles, 1024 }));
    EXPECT_NE(parse_resource_limit("nproc=5").error().message().find("unknown resource 'nproc'"), std::string::npos);
    EXPECT_FALSE(parse_resource_limit("fsize").has_value());
    EXPECT_FALSE(parse_resource_limit("fsize=12k").has_value());
}

TEST(JailerOptions, KvmmArgumentsMayNotOverrideWhatTheJailerPasses) {
    for (std::string const flag : { "--id=x", "--start-time-us", "--start-time-cpu-us=5", "--parent-cpu-time-us" })
        EXPECT_NE(error_of(with({ "--", "--api-sock", "/a", flag })).find("passes"), std::string::npos) << flag;
}

} // namespace
} // namespace kvmm::jailer

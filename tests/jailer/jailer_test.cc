// kvmm-jailer from outside (KVM tier, as root): a jailed kvmm boots the test guest, and
// jail_probe, run in kvmm's place, shows what a jailed process can see and do (the jail
// negative tests of docs/jailer.md); flags and setups that must be refused leave nothing behind.
#include "base/testing/temporary_directory.h"
#include "child_process.h"
#include "jailed_process.h"
#include "kvmm_process.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace kvmm::testing {
namespace {

constexpr uid_t JAIL_UID = 12345;
constexpr gid_t JAIL_GID = 12346;

std::string jailer_binary() { return KVMM_JAILER_BINARY; }
std::string probe_binary() { return JAIL_PROBE_BINARY; }

std::set<std::string> directory_entries(std::string const& path) {
    std::set<std::string> names;
    std::error_code error;
    for (auto const& entry : std::filesystem::directory_iterator(path, error))
        names.insert(entry.path().filename().string());
    return names;
}

std::string joined(std::set<std::string> const& names) {
    std::string text;
    for (auto const& name : names)
        text += (text.empty() ? "" : ",") + name;
    return text;
}

std::string read_link(std::string const& path) {
    std::error_code error;
    auto const target = std::filesystem::read_symlink(path, error);
    return error ? std::string() : target.string();
}

// The mount point of the cgroup v1 hierarchy with `controller`, or of cgroup2 (controller "").
std::string cgroup_mount(std::string const& controller) {
    std::istringstream lines(read_whole_file("/proc/self/mounts"));
    std::string device, path, type, options;
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        fields >> device >> path >> type >> options;
        if (controller.empty() && type == "cgroup2")
            return path;
        if (!controller.empty() && type == "cgroup" &&
            ("," + options + ",").find("," + controller + ",") != std::string::npos)
            return path;
    }
    return {};
}

class JailerTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0)
            GTEST_SKIP() << "the jailer tests need root (mount namespaces, mknod, setuid)";
        ASSERT_EQ(::chmod(m_base.path().c_str(), 0755), 0);
        static int counter = 0;
        m_id = "jail-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
    }
    void TearDown() override {
        for (auto const& mount : { cgroup_mount(""), cgroup_mount("pids") }) {
            if (mount.empty())
                continue;
            ::rmdir((mount + "/" + m_parent_cgroup + "/" + m_id).c_str());
            ::rmdir((mount + "/" + m_parent_cgroup).c_str());
        }
    }

    std::vector<std::string> jailer(std::string const& exec_file, std::vector<std::string> const& flags,
                                    std::vector<std::string> const& exec_arguments = {}) const {
        std::vector<std::string> arguments { jailer_binary(),
                                             "--id",
                                             m_id,
                                             "--exec-file",
                                             exec_file,
                                             "--uid",
                                             std::to_string(JAIL_UID),
                                             "--gid",
                                             std::to_string(JAIL_GID),
                                             "--chroot-base-dir",
                                             m_base.path() };
        arguments.insert(arguments.end(), flags.begin(), flags.end());
        arguments.push_back("--");
        arguments.insert(arguments.end(), exec_arguments.begin(), exec_arguments.end());
        return arguments;
    }
    std::string jail_root(std::string const& exec_name = "jail_probe") const {
        return m_base / (exec_name + "/" + m_id + "/root");
    }

    TemporaryDirectory m_base { "kvmm-jail-base" };
    std::string m_id;
    std::string m_parent_cgroup = "kvmm-jailer-test-" + std::to_string(::getpid());
};

TEST_F(JailerTest, JailedKvmmBootsTheTestGuest) {
    auto const reason = kvm_unavailable_reason();
    if (!reason.empty())
        GTEST_SKIP() << "KVM tier skipped: " << reason;
    // The administrator places the kernel in the jail root before starting the jailer.
    auto const root = jail_root("kvmm");
    std::filesystem::create_directories(root);
    std::filesystem::copy_file(test_guest(), root + "/guest.elf");
    // The console goes to a file in the jail: kvmm writes a pipe or terminal on stdout through a
    // description of its own, re-opened through /proc/self/fd, and the jail has no /proc.
    auto const result =
        run_process(jailer(kvmm_binary(), { "--resource-limit", "no-file=4096" },
                           { "--kernel", "/guest.elf", "--cmdline", "test=hello", "--console", "file=/console.log" }),
                    {}, std::chrono::seconds(60));
    EXPECT_FALSE(result.timed_out);
    EXPECT_EQ(result.exit_status, 0) << result.standard_error;
    auto const console = read_whole_file(root + "/console.log");
    EXPECT_NE(console.find("kvmm-test: hello ok"), std::string::npos) << console << result.standard_error;
    struct stat log_status {};
    ASSERT_EQ(::stat((root + "/console.log").c_str(), &log_status), 0);
    EXPECT_EQ(log_status.st_uid, JAIL_UID); // created by kvmm, as the jailed user
    struct stat status {};
    ASSERT_EQ(::stat((root + "/dev/kvm").c_str(), &status), 0);
    EXPECT_TRUE(S_ISCHR(status.st_mode));
    EXPECT_EQ(status.st_uid, JAIL_UID);
    EXPECT_EQ(status.st_gid, JAIL_GID);
    EXPECT_EQ(status.st_mode & 07777, 0600u);
}

TEST_F(JailerTest, JailedKvmmServesTheApiInTheJailRootAndSeesOnlyJailPaths) {
    auto const reason = kvm_unavailable_reason();
    if (!reason.empty())
        GTEST_SKIP() << "KVM tier skipped: " << reason;
    auto const root = jail_root("kvmm");
    std::filesystem::create_directories(root);
    std::filesystem::copy_file(test_guest(), root + "/guest.elf");
    TemporaryDirectory logs("kvmm-jail-logs");
    // stdout is a file here (KvmmProcess), which kvmm writes without /proc.
    KvmmProcess kvmm(jailer(kvmm_binary(), { "--resource-limit", "no-file=4096" }, { "--api-sock", "/api.sock" }),
                     logs.path());
    auto const socket = root + "/api.sock";
    ASSERT_TRUE(eventually([&] { return http(socket, "GET", "/").status == 200; })) << kvmm.log();
    EXPECT_NE(http(socket, "GET", "/").body.find("\"" + m_id + "\""), std::string::npos);
    struct stat status {};
    ASSERT_EQ(::stat(socket.c_str(), &status), 0);
    EXPECT_EQ(status.st_uid, JAIL_UID);

    // The guest's host path means nothing inside the jail: refused at PUT or at InstanceStart.
    auto const host_path = http(socket, "PUT", "/boot-source", R"({"kernel_image_path": ")" + test_guest() + R"("})");
    if (host_path.status == 204)
        EXPECT_EQ(http(socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 400);
    else
        EXPECT_EQ(host_path.status, 400) << host_path.body;

    EXPECT_EQ(
        http(socket, "PUT", "/boot-source", R"({"kernel_image_path": "/guest.elf", "boot_args": "test=hello"})").status,
        204);
    auto const started = http(socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})");
    ASSERT_EQ(started.status, 204) << started.body << kvmm.log();
    EXPECT_EQ(kvmm.wait(std::chrono::seconds(30)), 0) << kvmm.log();
    EXPECT_NE(kvmm.output().find("kvmm-test: hello ok"), std::string::npos) << kvmm.output() << kvmm.log();
}

TEST_F(JailerTest, JailedKvmmRunsEveryThreadFilteredWithoutCapabilities) {
    auto const reason = kvm_unavailable_reason();
    if (!reason.empty())
        GTEST_SKIP() << "KVM tier skipped: " << reason;
    auto const root = jail_root("kvmm");
    std::filesystem::create_directories(root);
    std::filesystem::copy_file(test_guest(), root + "/guest.elf");
    TemporaryDirectory logs("kvmm-jail-logs");
    KvmmProcess kvmm(jailer(kvmm_binary(), { "--resource-limit", "no-file=4096" }, { "--api-sock", "/api.sock" }),
                     logs.path());
    auto const socket = root + "/api.sock";
    ASSERT_TRUE(eventually([&] { return http(socket, "GET", "/").status == 200; })) << kvmm.log();
    ASSERT_EQ(http(socket, "PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 64, "smt": false})").status,
              204);
    ASSERT_EQ(http(socket, "PUT", "/boot-source",
                   R"({"kernel_image_path": "/guest.elf", "boot_args": "test=keyboard-wait"})")
                  .status,
              204);
    ASSERT_EQ(http(socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 204) << kvmm.log();

    // The jail and kvmm's filters together, as an administrator sees them from outside: every
    // thread (event loop, API, both vCPUs) filtered, no_new_privs, no capability.
    std::map<std::string, ThreadConfinement> threads;
    bool const confined = eventually([&] {
        threads = thread_confinement(kvmm.pid());
        if (threads.size() != 4)
            return false;
        for (auto const& [name, confinement] : threads) {
            if (confinement.seccomp != "2" || confinement.no_new_privs != "1" ||
                confinement.cap_effective != "0000000000000000")
                return false;
        }
        return true;
    });
    std::string seen;
    for (auto const& [name, confinement] : threads)
        seen += name + ": Seccomp " + confinement.seccomp + ", NoNewPrivs " + confinement.no_new_privs + ", CapEff " +
                confinement.cap_effective + "; ";
    EXPECT_TRUE(confined) << seen << kvmm.log();
    for (char const* name : { "kvmm", "api", "vcpu0", "vcpu1" })
        EXPECT_EQ(threads.count(name), 1u) << name << " missing: " << seen;
    EXPECT_EQ(http(socket, "PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})").status, 204);
    EXPECT_EQ(kvmm.wait(std::chrono::seconds(30)), 0) << kvmm.log();
}

TEST_F(JailerTest, JailedProcessSeesOnlyTheJailRoot) {
    JailedProcess process(jailer(probe_binary(), {}));
    auto report = process.read_report();
    ASSERT_EQ(report["report"], "done") << process.standard_output() << process.standard_error();
    // From inside: the jail's own entries, no host directory.
    auto const inside = report["root"];
    for (std::string const host : { "etc", "proc", "sys", "tmp", "home", "root", "usr", "var", "work", "srv" })
        EXPECT_EQ(("," + inside + ",").find("," + host + ","), std::string::npos) << host << " in " << inside;
    EXPECT_NE(inside.find("dev"), std::string::npos);
    EXPECT_NE(inside.find("jail_probe"), std::string::npos);
    EXPECT_EQ(report["open_etc_passwd"], "No such file or directory");
    EXPECT_EQ(report["open_proc_self_status"], "No such file or directory");
    EXPECT_EQ(report["open_dev_kvm"].empty(), false);
    // From outside: the process's root is the jail root and holds the same entries.
    auto const pid = std::to_string(process.pid());
    EXPECT_EQ(joined(directory_entries("/proc/" + pid + "/root")), inside);
    EXPECT_EQ(joined(directory_entries(jail_root())), inside);
    EXPECT_EQ(read_link("/proc/" + pid + "/cwd"), "/");
    // The exec file (a link or a copy) is root's and only root may write it; the jail root is
    // the jailed user's.
    struct stat status {};
    ASSERT_EQ(::stat((jail_root() + "/jail_probe").c_str(), &status), 0);
    EXPECT_EQ(status.st_uid, 0u);
    EXPECT_EQ(status.st_mode & 022, 0u);
    ASSERT_EQ(::stat(jail_root().c_str(), &status), 0);
    EXPECT_EQ(status.st_uid, JAIL_UID);
    EXPECT_EQ(process.finish(), 0) << process.standard_error();
}

TEST_F(JailerTest, JailedProcessHasNoCapabilitiesAndTheGivenIds) {
    // A descriptor the caller leaks (no O_CLOEXEC) must not reach the jail.
    int leaked[2];
    ASSERT_EQ(::pipe(leaked), 0);
    JailedProcess process(jailer(probe_binary(), {}, { "--extra", "argument" }));
    ::close(leaked[0]);
    ::close(leaked[1]);
    auto report = process.read_report();
    ASSERT_EQ(report["report"], "done") << process.standard_output() << process.standard_error();
    EXPECT_EQ(report["uid"], "12345/12345/12345");
    EXPECT_EQ(report["gid"], "12346/12346/12346");
    EXPECT_EQ(report["groups"], "0");
    EXPECT_EQ(report["cap_effective"], "0");
    EXPECT_EQ(report["cap_permitted"], "0");
    EXPECT_EQ(report["cap_inheritable"], "0");
    EXPECT_EQ(report["cap_bounding_count"], "0");
    EXPECT_EQ(report["no_new_privs"], "1");
    EXPECT_EQ(report["setuid_0"], "Operation not permitted");
    EXPECT_EQ(report["ptrace_parent"], "Operation not permitted");
    EXPECT_EQ(report["signal_parent"], "Operation not permitted");
    // Refused for want of CAP_MKNOD, or first by Landlock (EACCES) where the kernel has it.
    EXPECT_THAT(report["mknod"], ::testing::AnyOf("Operation not permitted", "Permission denied"));
    EXPECT_EQ(report["environment_empty"], "1");
    EXPECT_EQ(report["descriptors_above_2"], "0");
    // Firecracker's jailer arguments, then the caller's.
    auto const& arguments = report["arguments"];
    EXPECT_EQ(arguments.rfind("--id=" + m_id + " --start-time-us=", 0), 0u) << arguments;
    EXPECT_NE(arguments.find(" --start-time-cpu-us="), std::string::npos) << arguments;
    EXPECT_EQ(arguments.find("--parent-cpu-time-us"), std::string::npos) << arguments;
    EXPECT_TRUE(arguments.ends_with(" --extra argument")) << arguments;

    // From outside, as an administrator would check it.
    auto const pid = process.pid();
    for (std::string const set : { "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb" })
        EXPECT_EQ(proc_status_field(pid, set), "0000000000000000") << set;
    EXPECT_EQ(proc_status_field(pid, "NoNewPrivs"), "1");
    EXPECT_EQ(proc_status_field(pid, "Uid"), "12345\t12345\t12345\t12345");
    EXPECT_EQ(proc_status_field(pid, "Gid"), "12346\t12346\t12346\t12346");
    EXPECT_EQ(proc_status_field(pid, "Groups"), "");
    // Seccomp is kvmm's own: JailedKvmmRunsEveryThreadFilteredWithoutCapabilities checks it.
    EXPECT_EQ(process.finish(), 0) << process.standard_error();
}

TEST_F(JailerTest, AllowRootKeepsUidZeroWithoutCapabilities) {
    auto arguments = jailer(probe_binary(), { "--allow-root" });
    std::replace(arguments.begin(), arguments.end(), std::to_string(JAIL_UID), std::string("0"));
    std::replace(arguments.begin(), arguments.end(), std::to_string(JAIL_GID), std::string("0"));
    JailedProcess process(arguments);
    auto report = process.read_report();
    ASSERT_EQ(report["report"], "done") << process.standard_output() << process.standard_error();
    EXPECT_EQ(report["uid"], "0/0/0");
    EXPECT_EQ(report["cap_effective"], "0");
    EXPECT_EQ(report["cap_permitted"], "0");
    EXPECT_EQ(report["cap_bounding_count"], "0");
    // Refused for want of CAP_MKNOD, or first by Landlock (EACCES) where the kernel has it.
    EXPECT_THAT(report["mknod"], ::testing::AnyOf("Operation not permitted", "Permission denied"));
    EXPECT_EQ(proc_status_field(process.pid(), "CapEff"), "0000000000000000");
    EXPECT_EQ(proc_status_field(process.pid(), "CapBnd"), "0000000000000000");
    EXPECT_EQ(process.finish(), 0) << process.standard_error();
}

TEST_F(JailerTest, JailedProcessIsInTheGivenCgroupVersionOne) {
    auto const mount = cgroup_mount("pids");
    if (mount.empty())
        GTEST_SKIP() << "no cgroup v1 pids hierarchy is mounted on this host";
    JailedProcess process(jailer(probe_binary(), { "--cgroup", "pids.max=64", "--parent-cgroup", m_parent_cgroup }));
    auto report = process.read_report();
    ASSERT_EQ(report["report"], "done") << process.standard_output() << process.standard_error();
    auto const cgroups = read_whole_file("/proc/" + std::to_string(process.pid()) + "/cgroup");
    EXPECT_NE(cgroups.find(":pids:/" + m_parent_cgroup + "/" + m_id + "\n"), std::string::npos) << cgroups;
    EXPECT_EQ(read_whole_file(mount + "/" + m_parent_cgroup + "/" + m_id + "/pids.max"), "64\n");
    EXPECT_EQ(process.finish(), 0) << process.standard_error();
}

TEST_F(JailerTest, JailedProcessIsInTheGivenCgroupVersionTwo) {
    auto const mount = cgroup_mount("");
    if (mount.empty())
        GTEST_SKIP() << "no cgroup2 hierarchy is mounted on this host";
    JailedProcess process(
        jailer(probe_binary(), { "--cgroup-version", "2", "--parent-cgroup", m_parent_cgroup + "/vms" }));
    auto report = process.read_report();
    ASSERT_EQ(report["report"], "done") << process.standard_output() << process.standard_error();
    auto const cgroups = read_whole_file("/proc/" + std::to_string(process.pid()) + "/cgroup");
    EXPECT_NE(cgroups.find("0::/" + m_parent_cgroup + "/vms/" + m_id + "\n"), std::string::npos) << cgroups;
    auto const members = read_whole_file(mount + "/" + m_parent_cgroup + "/vms/" + m_id + "/cgroup.procs");
    EXPECT_EQ(members, std::to_string(process.pid()) + "\n");
    EXPECT_EQ(process.finish(), 0) << process.standard_error();
    ::rmdir((mount + "/" + m_parent_cgroup + "/vms/" + m_id).c_str());
    ::rmdir((mount + "/" + m_parent_cgroup + "/vms").c_str());
}

TEST_F(JailerTest, JailedProcessJoinsTheNetworkNamespace) {
    // A network namespace held by a process of the test's own (unshare(1) from util-linux).
    int const null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    pid_t const holder = spawn_process({ "/usr/bin/unshare", "--net", "/bin/sleep", "30" }, null_fd, null_fd, null_fd);
    ::close(null_fd);
    ASSERT_GT(holder, 0);
    auto const ours = read_link("/proc/self/ns/net");
    auto const namespace_path = "/proc/" + std::to_string(holder) + "/ns/net";
    for (int tries = 0; tries < 200 && (read_link(namespace_path) == ours || read_link(namespace_path).empty());
         ++tries)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto const theirs = read_link(namespace_path);
    ASSERT_NE(theirs, ours);

    JailedProcess process(jailer(probe_binary(), { "--netns", namespace_path }));
    auto report = process.read_report();
    EXPECT_EQ(report["report"], "done") << process.standard_output() << process.standard_error();
    EXPECT_EQ(read_link("/proc/" + std::to_string(process.pid()) + "/ns/net"), theirs);
    EXPECT_EQ(process.finish(), 0) << process.standard_error();
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);
}

TEST_F(JailerTest, NewPidNamespaceRunsTheProcessAsPidOne) {
    JailedProcess process(jailer(probe_binary(), { "--new-pid-ns" }));
    auto report = process.read_report();
    ASSERT_EQ(report["report"], "done") << process.standard_output() << process.standard_error();
    EXPECT_EQ(report["pid"], "1");
    EXPECT_NE(report["arguments"].find("--parent-cpu-time-us="), std::string::npos) << report["arguments"];
    // The jailer itself has exited; the jailed process's host pid is in the pid file.
    auto const text = read_whole_file(jail_root() + "/jail_probe.pid");
    ASSERT_FALSE(text.empty());
    pid_t const host_pid = std::stoi(text);
    EXPECT_NE(host_pid, process.pid());
    EXPECT_EQ(proc_status_field(host_pid, "NSpid"), std::to_string(host_pid) + "\t1");
    EXPECT_EQ(proc_status_field(host_pid, "CapEff"), "0000000000000000");
    EXPECT_EQ(process.finish(), 0) << process.standard_error();
    // Closing its stdin (with the jailer gone, the test holds the only write end) ends it.
    for (int tries = 0; tries < 500 && ::kill(host_pid, 0) == 0; ++tries)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (::kill(host_pid, 0) == 0) {
        ::kill(host_pid, SIGKILL);
        ADD_FAILURE() << "the jailed process did not end when its stdin closed";
    }
}

TEST_F(JailerTest, DaemonizeStartsASessionWithStdioOnDevNull) {
    JailedProcess process(jailer(probe_binary(), { "--daemonize" }, { "--sleep", "--wait-seconds=30" }));
    auto const pid = std::to_string(process.pid());
    for (int tries = 0; tries < 500 && !read_link("/proc/" + pid + "/exe").ends_with("/jail_probe"); ++tries)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(read_link("/proc/" + pid + "/exe").ends_with("/jail_probe")) << process.standard_error();
    for (std::string const fd : { "0", "1", "2" })
        EXPECT_EQ(read_link("/proc/" + pid + "/fd/" + fd), "/dev/null") << fd;
    // /proc/PID/stat field 6 is the session id; after setsid() it is the process's own pid.
    std::istringstream stat(read_whole_file("/proc/" + pid + "/stat"));
    std::string field;
    for (int index = 0; index < 6; ++index)
        stat >> field;
    EXPECT_EQ(field, pid);
    ::kill(process.pid(), SIGKILL);
    process.finish();
}

// Bad input: refused with a clear message before anything is created.
struct RefusedCase {
    char const* name;
    // Flag, value pairs replacing or adding to the defaults; "FLAG!" adds FLAG once more,
    // "--" appends kvmm arguments, "$REMOVE" drops the flag, "$NAME" names a fixture below.
    std::vector<std::string> replace;
    char const* message;
};

class JailerRefusalTest : public JailerTest, public ::testing::WithParamInterface<RefusedCase> {};

TEST_P(JailerRefusalTest, IsRefusedBeforeAnythingIsCreated) {
    auto const& refused = GetParam();
    auto arguments = jailer(probe_binary(), {});
    auto const separator = std::find(arguments.begin(), arguments.end(), "--");
    arguments.erase(separator, arguments.end());
    // Fixtures a case may name.
    auto const symlink_base = m_base / "link";
    ASSERT_EQ(::symlink(m_base.path().c_str(), symlink_base.c_str()), 0);
    TemporaryDirectory open_base("kvmm-jail-open");
    ASSERT_EQ(::chmod(open_base.path().c_str(), 0777), 0);
    auto const plain_file = m_base / "plain";
    std::ofstream(plain_file) << "not a program";
    auto const before = directory_entries(m_base.path());

    for (size_t index = 0; index < refused.replace.size(); index += 2) {
        auto value = refused.replace[index + 1];
        if (value == "$SYMLINK_BASE")
            value = symlink_base;
        else if (value == "$OPEN_BASE")
            value = open_base.path();
        else if (value == "$PLAIN_FILE")
            value = plain_file;
        else if (value == "$BASE")
            value = m_base.path();
        auto const flag = std::find(arguments.begin(), arguments.end(), refused.replace[index]);
        if (refused.replace[index].ends_with("!")) // given once more
            arguments.insert(arguments.end(),
                             { refused.replace[index].substr(0, refused.replace[index].size() - 1), value });
        else if (refused.replace[index] == "--")
            arguments.insert(arguments.end(), { "--", value });
        else if (value == "$REMOVE")
            arguments.erase(flag, flag + 2);
        else if (flag != arguments.end())
            *(flag + 1) = value;
        else
            arguments.insert(arguments.end(), { refused.replace[index], value });
    }
    auto const result = run_process(arguments);
    EXPECT_NE(result.exit_status, 0);
    EXPECT_NE(result.standard_error.find(refused.message), std::string::npos) << result.standard_error;
    EXPECT_EQ(directory_entries(m_base.path()), before);
    EXPECT_TRUE(directory_entries(open_base.path()).empty());
    auto const pids = cgroup_mount("pids");
    if (!pids.empty()) {
        EXPECT_FALSE(std::filesystem::exists(pids + "/jail_probe/" + m_id));
    }
}

INSTANTIATE_TEST_SUITE_P(
    BadInput, JailerRefusalTest,
    ::testing::Values(RefusedCase { "UidZero", { "--uid", "0" }, "pass --allow-root" },
                      RefusedCase { "GidZero", { "--gid", "0" }, "pass --allow-root" },
                      RefusedCase { "IdWithDots",
                                    {
                                        "--id",
                                        "..",
                                    },
                                    "only letters, digits and hyphens" },
                      RefusedCase { "IdWithSlash", { "--id", "a/b" }, "only letters, digits and hyphens" },
                      RefusedCase { "IdTooLong", { "--id", std::string(65, 'a') }, "at most 64" },
                      RefusedCase { "MissingGid", { "--gid", "$REMOVE" }, "--gid is required" },
                      RefusedCase { "RepeatedUid", { "--uid!", "777" }, "--uid is given more than once" },
                      RefusedCase { "SymlinkBase", { "--chroot-base-dir", "$SYMLINK_BASE" }, "is a symlink" },
                      RefusedCase {
                          "WorldWritableBase", { "--chroot-base-dir", "$OPEN_BASE" }, "writable by everyone" },
                      RefusedCase { "ExecNotExecutable", { "--exec-file", "$PLAIN_FILE" }, "is not executable" },
                      RefusedCase { "ExecIsADirectory", { "--exec-file", "$BASE" }, "is not a regular file" },
                      RefusedCase { "NetnsNotANamespace", { "--netns", "$PLAIN_FILE" }, "not a namespace handle" },
                      RefusedCase { "UnknownController", { "--cgroup", "nosuch.max=1" }, "no cgroup v1 hierarchy" },
                      RefusedCase { "KvmmIdAfterSeparator", { "--", "--id=other" }, "passes --id to kvmm itself" }),
    [](auto const& parameter_info) { return std::string(parameter_info.param.name); });

TEST_F(JailerTest, FailedCgroupSetupLeavesNothingBehind) {
    auto const mount = cgroup_mount("pids");
    if (mount.empty())
        GTEST_SKIP() << "no cgroup v1 pids hierarchy is mounted on this host";
    // The kernel refuses the value only when it is written, after the jail's files and the
    // cgroup directories exist.
    auto const result =
        run_process(jailer(probe_binary(), { "--cgroup", "pids.max=lots", "--parent-cgroup", m_parent_cgroup }));
    EXPECT_EQ(result.exit_status, 1);
    EXPECT_NE(result.standard_error.find("writing 'lots' to"), std::string::npos) << result.standard_error;
    EXPECT_TRUE(directory_entries(m_base.path()).empty()) << joined(directory_entries(m_base.path()));
    EXPECT_FALSE(std::filesystem::exists(mount + "/" + m_parent_cgroup));
}

TEST_F(JailerTest, FailedCgroupSetupGivesTheJailRootBack) {
    auto const mount = cgroup_mount("pids");
    if (mount.empty())
        GTEST_SKIP() << "no cgroup v1 pids hierarchy is mounted on this host";
    // The jail root exists (the administrator placed the kernel), so the jailer has given it to
    // the jailed user before the cgroup value fails.
    auto const root = jail_root();
    std::filesystem::create_directories(root);
    std::ofstream(root + "/guest.elf") << "kernel";
    auto const result =
        run_process(jailer(probe_binary(), { "--cgroup", "pids.max=lots", "--parent-cgroup", m_parent_cgroup }));
    EXPECT_EQ(result.exit_status, 1);
    EXPECT_NE(result.standard_error.find("writing 'lots' to"), std::string::npos) << result.standard_error;
    EXPECT_EQ(joined(directory_entries(root)), "guest.elf");
    struct stat status {};
    ASSERT_EQ(::stat(root.c_str(), &status), 0);
    EXPECT_EQ(status.st_uid, 0u);
    EXPECT_EQ(status.st_gid, 0u);
    EXPECT_FALSE(std::filesystem::exists(mount + "/" + m_parent_cgroup));
}

TEST_F(JailerTest, FailureInsideTheJailStillRemovesEverything) {
    auto const mount = cgroup_mount("pids");
    if (mount.empty())
        GTEST_SKIP() << "no cgroup v1 pids hierarchy is mounted on this host";
    // setsid(1) makes the jailer a session leader, so its own setsid() for --daemonize fails:
    // after pivot_root, when the jail's files are reachable only through the jailer's
    // descriptors, and after the cgroup was created.
    auto arguments =
        jailer(probe_binary(), { "--daemonize", "--cgroup", "pids.max=64", "--parent-cgroup", m_parent_cgroup });
    arguments.insert(arguments.begin(), "/usr/bin/setsid");
    auto const result = run_process(arguments);
    EXPECT_EQ(result.exit_status, 1);
    EXPECT_NE(result.standard_error.find("--daemonize: setsid"), std::string::npos) << result.standard_error;
    EXPECT_TRUE(directory_entries(m_base.path()).empty()) << joined(directory_entries(m_base.path()));
    EXPECT_FALSE(std::filesystem::exists(mount + "/" + m_parent_cgroup));
}

TEST_F(JailerTest, FailedSetupKeepsWhatTheAdministratorPlaced) {
    // A jail root with the kernel placed, and a leftover device node path the jailer must not
    // overwrite: setup fails there and removes only its own files.
    auto const root = jail_root();
    std::filesystem::create_directories(root + "/dev");
    std::ofstream(root + "/guest.elf") << "kernel";
    std::ofstream(root + "/dev/urandom") << "planted";
    auto const result = run_process(jailer(probe_binary(), {}));
    EXPECT_EQ(result.exit_status, 1);
    EXPECT_NE(result.standard_error.find("dev/urandom: already exists"), std::string::npos) << result.standard_error;
    EXPECT_EQ(joined(directory_entries(root)), "dev,guest.elf");
    EXPECT_EQ(joined(directory_entries(root + "/dev")), "urandom");
    struct stat status {};
    ASSERT_EQ(::stat(root.c_str(), &status), 0);
    EXPECT_EQ(status.st_uid, 0u);
}

} // namespace
} // namespace kvmm::testing

// kvmmd with its jail (the default): every VM runs through kvmm-jailer under a uid from
// --vm-uid-range, without capabilities, in its own root, with its disk handed in for the run;
// the control and console sockets serve the --socket-group and nobody else. Needs root and
// /dev/kvm; release builds only (a jail has no /proc for the sanitizer runtimes).
#include "child_process.h"
#include "manager/cgroup.h"
#include "manager/crash_point.h"
#include "manager/protocol.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <grp.h>
#include <set>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace kvmm {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr uint32_t UID_START = 820000;
constexpr uint32_t UID_COUNT = 100;
constexpr uid_t NOBODY = 65534;

std::string read_file(std::string const& path) {
    std::ifstream stream(path);
    return std::string((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
}

// The counter scenario's "kvmm-test: counter N" lines, in order.
std::vector<uint64_t> logged_counters(std::string const& log) {
    std::vector<uint64_t> counters;
    std::string const marker = "kvmm-test: counter ";
    for (size_t at = log.find(marker); at != std::string::npos; at = log.find(marker, at + 1)) {
        char const* digits = log.c_str() + at + marker.size();
        if (*digits >= '0' && *digits <= '9')
            counters.push_back(std::strtoull(digits, nullptr, 10));
    }
    return counters;
}

bool poll_until(std::function<bool()> const& done, std::chrono::milliseconds timeout) {
    auto const deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(50ms);
    }
    return true;
}

// "Uid:\t1\t1\t1\t1" -> the first number of the field `key` in /proc/PID/status.
std::string status_field(pid_t pid, std::string const& key) {
    std::ifstream stream(fmt::format("/proc/{}/status", pid));
    std::string line;
    while (std::getline(stream, line)) {
        if (line.starts_with(key + ":")) {
            auto const value = line.substr(key.size() + 1);
            auto const begin = value.find_first_not_of(" \t");
            return value.substr(begin, value.find_first_of(" \t", begin) - begin);
        }
    }
    return {};
}

// In a child that has become `uid` with exactly the supplementary groups `groups`: connect(2)
// to `socket_path`. Returns 0 on success, else the errno.
int connect_as(uid_t uid, std::vector<gid_t> const& groups, std::string const& socket_path) {
    pid_t const pid = ::fork();
    if (pid == 0) {
        if (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0)
            ::_exit(255);
        int const fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un address {};
        address.sun_family = AF_UNIX;
        std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", socket_path.c_str());
        if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
            ::_exit(errno);
        ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 254;
}

// kvmmctl run as `uid` with the supplementary groups `groups`; its exit status.
int kvmmctl_as(uid_t uid, std::vector<gid_t> const& groups, std::vector<std::string> arguments) {
    pid_t const pid = ::fork();
    if (pid == 0) {
        if (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0)
            ::_exit(255);
        int const null_fd = ::open("/dev/null", O_WRONLY);
        ::dup2(null_fd, STDOUT_FILENO);
        ::dup2(null_fd, STDERR_FILENO);
        arguments.insert(arguments.begin(), KVMMCTL_BINARY);
        std::vector<char*> pointers;
        for (auto& argument : arguments)
            pointers.push_back(argument.data());
        pointers.push_back(nullptr);
        ::execv(KVMMCTL_BINARY, pointers.data());
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 254;
}

class JailedManagerTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (auto reason = testing::kvm_unavailable_reason(); !reason.empty())
            GTEST_SKIP() << reason;
        ASSERT_EQ(::geteuid(), 0u) << "kvmmd's jail needs root";
        char pattern[] = "/tmp/kvmmd-jail-test-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        m_dir = pattern;
        // Traversable, so that the socket modes (not this directory) decide who gets in.
        ::chmod(m_dir.c_str(), 0755);
        m_socket = m_dir + "/kvmmd.sock";
        m_cgroup_parent = fmt::format("kvmm-jail-test-{}", ::getpid());
        m_group_name = fmt::format("kvmmjt{}", ::getpid());
        auto added = testing::run_process({ "/usr/sbin/groupadd", m_group_name });
        ASSERT_EQ(added.exit_status, 0) << added.standard_error;
        auto* group = ::getgrnam(m_group_name.c_str());
        ASSERT_NE(group, nullptr);
        m_group = group->gr_gid;
        // The guest kernel and a disk on the jail base's file system (hard links).
        fs::copy_file(testing::test_guest(), m_dir + "/guest");
        ::chmod((m_dir + "/guest").c_str(), 0644);
        std::ofstream(m_dir + "/disk.img") << std::string(65536, 'd');
        ASSERT_EQ(::chown((m_dir + "/disk.img").c_str(), 1234, 5678), 0);
        ::chmod((m_dir + "/disk.img").c_str(), 0640);
        start_daemon({});
    }

    void TearDown() override {
        if (m_daemon_pid > 0) {
            if (auto client = DaemonClient::connect(m_socket, 5s)) {
                if (auto listed = client->call({ { "verb", "list" } }, 10s)) {
                    for (auto const& vm : (*listed)["vms"])
                        (void)DaemonClient::connect(m_socket, 5s)
                            ->call({ { "verb", "destroy" }, { "name", vm["name"] } }, 30s);
                }
            }
            ::kill(m_daemon_pid, SIGTERM);
            ::waitpid(m_daemon_pid, nullptr, 0);
        }
        for (auto const& hierarchy : { "cpu", "cpuacct", "memory" })
            ::rmdir(fmt::format("/sys/fs/cgroup/{}/{}", hierarchy, m_cgroup_parent).c_str());
        if (!m_group_name.empty())
            (void)testing::run_process({ "/usr/sbin/groupdel", m_group_name });
        if (!m_dir.empty())
            fs::remove_all(m_dir);
    }

    void start_daemon(std::vector<std::string> const& extra, std::string const& crash_at = {}) {
        std::vector<std::string> argv = { KVMMD_BINARY,
                                          "--state-dir",
                                          m_dir + "/state",
                                          "--socket",
                                          m_socket,
                                          "--kvmm",
                                          KVMM_BINARY,
                                          "--jailer",
                                          KVMM_JAILER_BINARY,
                                          "--cgroup-parent",
                                          m_cgroup_parent,
                                          "--vm-uid-range",
                                          fmt::format("{}:{}", UID_START, UID_COUNT),
                                          "--socket-group",
                                          m_group_name };
        argv.insert(argv.end(), extra.begin(), extra.end());
        std::string const log = m_dir + "/kvmmd.log";
        int const log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        ASSERT_GE(log_fd, 0);
        int const null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (crash_at.empty())
            ::unsetenv(CRASH_AT_VARIABLE);
        else
            ::setenv(CRASH_AT_VARIABLE, crash_at.c_str(), 1);
        m_daemon_pid = testing::spawn_process(argv, null_fd, log_fd, log_fd);
        ::unsetenv(CRASH_AT_VARIABLE);
        ::close(null_fd);
        ::close(log_fd);
        ASSERT_GT(m_daemon_pid, 0);
        for (int i = 0; i < 500; ++i) {
            if (auto client = DaemonClient::connect(m_socket, 100ms);
                client && client->call({ { "verb", "list" } }, 1s))
                return;
            std::this_thread::sleep_for(10ms);
        }
        FAIL() << "kvmmd did not answer: " << read_file(log);
    }

    testing::ProcessResult ctl(std::vector<std::string> arguments) {
        arguments.insert(arguments.begin(), { KVMMCTL_BINARY, "--socket", m_socket });
        return testing::run_process(arguments, {}, 30s);
    }

    std::string define(std::string const& name, std::string const& scenario, bool with_disk = true) {
        std::string const path = fmt::format("{}/{}.toml", m_dir, name);
        std::ofstream(path) << fmt::format("name = \"{}\"\nmemory = 16\nkernel = \"{}/guest\"\ncmdline = \"test={}\"\n",
                                           name, m_dir, scenario)
                            << (with_disk ? fmt::format("[[disk]]\npath = \"{}/disk.img\"\n", m_dir) : std::string {});
        return path;
    }

    static struct stat status_of(std::string const& path) {
        struct stat status {};
        EXPECT_EQ(::stat(path.c_str(), &status), 0) << path;
        return status;
    }

    // The VM "saver" (scenario counter, defined) is started, snapshotted, saved into
    // `save_directory` and restored; the guest must go on counting without booting again.
    void check_save_and_restore(std::string const& save_directory) {
        ASSERT_EQ(ctl({ "start", "saver" }).exit_status, 0);
        auto const log_path = m_dir + "/state/logs/saver.log";
        auto counters = [&] { return logged_counters(read_file(log_path)); };
        ASSERT_TRUE(poll_until([&] { return counters().size() >= 5; }, 20s)) << read_file(log_path);

        auto const snapshot = ctl({ "snapshot", "saver", "first" });
        ASSERT_EQ(snapshot.exit_status, 0) << snapshot.standard_error;
        for (auto const* suffix : { ".snap", ".mem" }) {
            auto const status = status_of(m_dir + "/state/snapshots/saver/first" + suffix);
            EXPECT_EQ(status.st_uid, 0u) << suffix;
            EXPECT_EQ(status.st_mode & 07777, 0600u) << suffix;
            EXPECT_EQ(status.st_nlink, 1u) << suffix;
        }
        EXPECT_EQ(info("saver")["state"], "running");
        auto const after_snapshot = counters().size();
        EXPECT_TRUE(poll_until([&] { return counters().size() > after_snapshot + 3; }, 10s))
            << "the VM keeps running after a snapshot";

        auto const file = save_directory + "/saver-image";
        auto const saved = ctl({ "save", "saver", file });
        ASSERT_EQ(saved.exit_status, 0) << saved.standard_error << read_file(m_dir + "/kvmmd.log");
        for (auto const& path : { file, file + ".mem" }) {
            auto const status = status_of(path);
            EXPECT_EQ(status.st_uid, 0u) << path;
            EXPECT_EQ(status.st_mode & 07777, 0600u) << path;
            EXPECT_EQ(status.st_nlink, 1u) << path;
        }
        EXPECT_EQ(info("saver")["state"], "saved");
        auto const before = counters();
        ASSERT_FALSE(before.empty());

        auto const restored = ctl({ "restore", "saver" });
        ASSERT_EQ(restored.exit_status, 0)
            << restored.standard_error << read_file(m_dir + "/state/logs/saver.kvmm.log");
        EXPECT_EQ(info("saver")["state"], "running");
        ASSERT_TRUE(poll_until([&] { return counters().size() >= before.size() + 5; }, 20s)) << read_file(log_path);
        auto const log = read_file(log_path);
        EXPECT_EQ(log.find("FAIL"), std::string::npos) << log;
        size_t boots = 0;
        for (size_t at = log.find("kvmm-test: counter with"); at != std::string::npos;
             at = log.find("kvmm-test: counter with", at + 1))
            ++boots;
        EXPECT_EQ(boots, 1u) << "the restored guest did not boot again\n" << log;
        auto const after = counters();
        EXPECT_GT(after.back(), before.back());

        // Once the VM is gone the saved files are root's again, with no link left in a jail.
        ASSERT_EQ(ctl({ "destroy", "saver" }).exit_status, 0);
        for (auto const& path : { file, file + ".mem" }) {
            auto const status = status_of(path);
            EXPECT_EQ(status.st_uid, 0u) << path;
            EXPECT_EQ(status.st_mode & 07777, 0600u) << path;
            EXPECT_EQ(status.st_nlink, 1u) << path;
        }
        EXPECT_TRUE(fs::is_empty(m_dir + "/state/jail/kvmm")) << "no jail is left";
    }

    json info(std::string const& name) {
        auto shown = ctl({ "info", name, "--json" });
        EXPECT_EQ(shown.exit_status, 0) << shown.standard_error;
        return shown.exit_status == 0 ? json::parse(shown.standard_output) : json::object();
    }

    std::string m_dir, m_socket, m_cgroup_parent, m_group_name;
    gid_t m_group { 0 };
    pid_t m_daemon_pid { 0 };
};

TEST_F(JailedManagerTest, StartedVm_RunsAsARangeUidWithoutCapabilitiesInItsJailAndGetsItsDiskOnlyWhileItRuns) {
    ASSERT_EQ(ctl({ "define", define("jailed_vm.1", "keyboard-wait") }).exit_status, 0);
    auto started = ctl({ "start", "jailed_vm.1" });
    ASSERT_EQ(started.exit_status, 0) << started.standard_error << read_file(m_dir + "/kvmmd.log");
    pid_t const pid = info("jailed_vm.1")["pid"].get<pid_t>();

    uint32_t const uid = static_cast<uint32_t>(std::stoul(status_field(pid, "Uid")));
    EXPECT_GE(uid, UID_START);
    EXPECT_LT(uid, UID_START + UID_COUNT);
    EXPECT_EQ(status_field(pid, "Gid"), std::to_string(uid));
    EXPECT_EQ(status_field(pid, "CapEff"), "0000000000000000");
    EXPECT_EQ(status_field(pid, "CapPrm"), "0000000000000000");
    EXPECT_EQ(status_field(pid, "NoNewPrivs"), "1");

    // Its root is the jail root, which holds only what the VM needs.
    std::string const jail_root = fmt::format("{}/state/jail/kvmm/jailed-vm-1-{}/root", m_dir, uid);
    struct stat process_root {
    }, expected_root {};
    ASSERT_EQ(::stat(fmt::format("/proc/{}/root", pid).c_str(), &process_root), 0);
    ASSERT_EQ(::stat(jail_root.c_str(), &expected_root), 0) << jail_root;
    EXPECT_EQ(process_root.st_ino, expected_root.st_ino);
    EXPECT_EQ(process_root.st_dev, expected_root.st_dev);
    EXPECT_TRUE(fs::exists(fmt::format("/proc/{}/root/control.sock", pid)));
    EXPECT_FALSE(fs::exists(fmt::format("/proc/{}/root/etc", pid)));
    EXPECT_FALSE(fs::exists(fmt::format("/proc/{}/root/tmp", pid)));

    // The guest booted, and the disk is the VM uid's while it runs.
    auto const deadline = std::chrono::steady_clock::now() + 10s;
    while (ctl({ "logs", "jailed_vm.1" }).standard_output.find("waiting for ctrl-alt-del") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
    EXPECT_NE(ctl({ "logs", "jailed_vm.1" }).standard_output.find("kvmm-test: waiting for ctrl-alt-del"),
              std::string::npos);
    struct stat disk {};
    ASSERT_EQ(::stat((m_dir + "/disk.img").c_str(), &disk), 0);
    EXPECT_EQ(disk.st_uid, uid);
    EXPECT_EQ(disk.st_gid, uid);

    auto shutdown = ctl({ "shutdown", "jailed_vm.1", "--timeout", "20" });
    ASSERT_EQ(shutdown.exit_status, 0) << shutdown.standard_error;
    EXPECT_EQ(info("jailed_vm.1")["last_exit"]["exit_status"], 0);
    ASSERT_EQ(::stat((m_dir + "/disk.img").c_str(), &disk), 0);
    EXPECT_EQ(disk.st_uid, 1234u);
    EXPECT_EQ(disk.st_gid, 5678u);
    EXPECT_EQ(disk.st_mode & 07777, 0640u);
    EXPECT_FALSE(fs::exists(fs::path(jail_root).parent_path())) << "the jail is removed after the run";

    // The uid is the VM's for good: the next start gets the same one.
    ASSERT_EQ(ctl({ "start", "jailed_vm.1" }).exit_status, 0);
    pid_t const second = info("jailed_vm.1")["pid"].get<pid_t>();
    EXPECT_EQ(status_field(second, "Uid"), std::to_string(uid));
    ASSERT_EQ(ctl({ "destroy", "jailed_vm.1" }).exit_status, 0);
    ASSERT_EQ(::stat((m_dir + "/disk.img").c_str(), &disk), 0);
    EXPECT_EQ(disk.st_uid, 1234u);
}

TEST_F(JailedManagerTest, KvmmctlVerbs_WorkUnchangedOnAJailedVm) {
    ASSERT_EQ(ctl({ "define", define("verbs", "echo") }).exit_status, 0);
    ASSERT_EQ(ctl({ "start", "verbs" }).exit_status, 0);
    EXPECT_NE(ctl({ "list" }).standard_output.find("running"), std::string::npos);
    ASSERT_EQ(ctl({ "suspend", "verbs" }).exit_status, 0);
    EXPECT_EQ(info("verbs")["state"], "paused");
    ASSERT_EQ(ctl({ "resume", "verbs" }).exit_status, 0);
    EXPECT_EQ(info("verbs")["state"], "running");
    // The metrics file kvmm writes in its jail is read from outside.
    auto metrics = ctl({ "metrics" });
    EXPECT_NE(metrics.standard_output.find("kvmm_vm_vcpu_exits_total{name=\"verbs\",vcpu=\"0\",reason=\"io\"}"),
              std::string::npos)
        << metrics.standard_output;
    auto const deadline = std::chrono::steady_clock::now() + 10s;
    while (ctl({ "logs", "verbs" }).standard_output.find("ready") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
    auto console =
        testing::run_process({ KVMMCTL_BINARY, "--socket", m_socket, "console", "verbs" }, "hello\nquit\n", 20s);
    EXPECT_EQ(console.exit_status, 0) << console.standard_error;
    EXPECT_NE(console.standard_output.find("echo: hello"), std::string::npos) << console.standard_output;
    // "quit" powers the guest off; undefine waits for that.
    auto const stop_deadline = std::chrono::steady_clock::now() + 10s;
    while (info("verbs")["state"] != "shut off" && std::chrono::steady_clock::now() < stop_deadline)
        std::this_thread::sleep_for(20ms);
    auto undefined = ctl({ "undefine", "verbs" });
    ASSERT_EQ(undefined.exit_status, 0) << undefined.standard_error;
    EXPECT_FALSE(fs::exists(m_dir + "/state/uids/verbs.uid"));
}

TEST_F(JailedManagerTest, UserOutsideTheSocketGroup_CanNeitherControlNorAttachButAMemberCan) {
    ASSERT_EQ(ctl({ "define", define("guarded", "keyboard-wait") }).exit_status, 0);
    ASSERT_EQ(ctl({ "start", "guarded" }).exit_status, 0);
    std::string const console_socket = info("guarded")["console_socket"].get<std::string>();
    ASSERT_TRUE(console_socket.starts_with(m_dir + "/state/jail/")) << console_socket;

    struct stat socket_status {};
    ASSERT_EQ(::stat(m_socket.c_str(), &socket_status), 0);
    EXPECT_EQ(socket_status.st_mode & 0777, 0660u);
    EXPECT_EQ(socket_status.st_gid, m_group);
    ASSERT_EQ(::stat(console_socket.c_str(), &socket_status), 0);
    EXPECT_EQ(socket_status.st_mode & 0777, 0660u);
    EXPECT_EQ(socket_status.st_gid, m_group);

    // nobody, no supplementary group: refused by the sockets' modes.
    EXPECT_EQ(connect_as(NOBODY, {}, m_socket), EACCES);
    EXPECT_EQ(connect_as(NOBODY, {}, console_socket), EACCES);
    EXPECT_NE(kvmmctl_as(NOBODY, {}, { "--socket", m_socket, "list" }), 0);
    EXPECT_NE(kvmmctl_as(NOBODY, {}, { "--socket", m_socket, "destroy", "guarded" }), 0);
    EXPECT_EQ(info("guarded")["state"], "running");
    // The same user in the group is served (so the refusal above is the group's doing).
    EXPECT_EQ(connect_as(NOBODY, { m_group }, m_socket), 0);
    EXPECT_EQ(connect_as(NOBODY, { m_group }, console_socket), 0);
    EXPECT_EQ(kvmmctl_as(NOBODY, { m_group }, { "--socket", m_socket, "list" }), 0);
}

TEST_F(JailedManagerTest, DaemonRestart_ReattachesAJailedVmAndRestoresTheDiskOfOneThatEndedMeanwhile) {
    ASSERT_EQ(ctl({ "define", define("kept", "idle", false) }).exit_status, 0);
    ASSERT_EQ(ctl({ "define", define("ended", "idle") }).exit_status, 0);
    ASSERT_EQ(ctl({ "start", "kept" }).exit_status, 0);
    ASSERT_EQ(ctl({ "start", "ended" }).exit_status, 0);
    pid_t const kept = info("kept")["pid"].get<pid_t>();
    pid_t const ended = info("ended")["pid"].get<pid_t>();
    ::kill(m_daemon_pid, SIGKILL);
    ::waitpid(m_daemon_pid, nullptr, 0);
    m_daemon_pid = 0;
    // The VM ends while no daemon watches: nobody has given its disk back yet.
    ::kill(ended, SIGKILL);
    // Gone, or a zombie its new parent has not reaped yet.
    auto const dead = [&] {
        std::string const stat = read_file(fmt::format("/proc/{}/stat", ended));
        auto const close = stat.rfind(')');
        return close == std::string::npos || (stat.size() > close + 2 && stat[close + 2] == 'Z');
    };
    for (int i = 0; i < 500 && !dead(); ++i)
        std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(dead());
    struct stat disk {};
    ASSERT_EQ(::stat((m_dir + "/disk.img").c_str(), &disk), 0);
    EXPECT_NE(disk.st_uid, 1234u);

    start_daemon({});
    EXPECT_EQ(info("kept")["pid"].get<pid_t>(), kept);
    EXPECT_EQ(info("kept")["state"], "running");
    // A zombie not yet reaped by its new parent is adopted and seen to end at once.
    auto const deadline = std::chrono::steady_clock::now() + 10s;
    while (info("ended")["state"] != "crashed" && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    EXPECT_EQ(info("ended")["state"], "crashed");
    ASSERT_EQ(::stat((m_dir + "/disk.img").c_str(), &disk), 0);
    EXPECT_EQ(disk.st_uid, 1234u);
    EXPECT_EQ(disk.st_gid, 5678u);
    // The re-attached VM is controlled as before (its metrics are read in its jail), and its
    // jail goes when it stops.
    auto metrics = ctl({ "metrics" });
    EXPECT_NE(metrics.standard_output.find("kvmm_vm_vcpu_exits_total{name=\"kept\",vcpu=\"0\""), std::string::npos)
        << metrics.standard_output;
    ASSERT_EQ(ctl({ "suspend", "kept" }).exit_status, 0);
    EXPECT_EQ(info("kept")["state"], "paused");
    ASSERT_EQ(ctl({ "destroy", "kept" }).exit_status, 0);
    EXPECT_TRUE(fs::is_empty(m_dir + "/state/jail/kvmm"));
}

// A jailed kvmm can attach only to a TAP its uid owns: kvmmd gives an existing TAP to the VM
// for the run and back to its owner after, and creates a missing one for the run only.
TEST_F(JailedManagerTest, Taps_AreTheVmsWhileItRunsThenBackToTheirOwnerOrGone) {
    std::string const existing = fmt::format("kjt{}a", ::getpid() % 100000);
    std::string const missing = fmt::format("kjt{}b", ::getpid() % 100000);
    auto added = testing::run_process(
        { "/usr/sbin/ip", "tuntap", "add", "dev", existing, "mode", "tap", "vnet_hdr", "user", "4321" });
    ASSERT_EQ(added.exit_status, 0) << added.standard_error;
    struct RemoveTap {
        std::string name;
        ~RemoveTap() { (void)testing::run_process({ "/usr/sbin/ip", "tuntap", "del", "dev", name, "mode", "tap" }); }
    } remove_existing { existing }, remove_missing { missing };
    std::string const path = m_dir + "/net.toml";
    std::ofstream(path) << fmt::format("name = \"net\"\nmemory = 16\nkernel = \"{}/guest\"\ncmdline = \"test=idle\"\n"
                                       "[[nic]]\ntap = \"{}\"\n[[nic]]\ntap = \"{}\"\n",
                                       m_dir, existing, missing);
    ASSERT_EQ(ctl({ "define", path }).exit_status, 0);
    auto started = ctl({ "start", "net" });
    ASSERT_EQ(started.exit_status, 0) << started.standard_error << read_file(m_dir + "/state/logs/net.kvmm.log");
    std::string const uid = status_field(info("net")["pid"].get<pid_t>(), "Uid");
    auto owner = [](std::string const& name) {
        std::string text = read_file("/sys/class/net/" + name + "/owner");
        return text.substr(0, text.find('\n'));
    };
    EXPECT_EQ(owner(existing), uid);
    EXPECT_EQ(owner(missing), uid);
    ASSERT_EQ(ctl({ "destroy", "net" }).exit_status, 0);
    EXPECT_EQ(owner(existing), "4321");
    EXPECT_FALSE(fs::exists("/sys/class/net/" + missing)) << "the TAP created for the run is gone";
}

// kvmmd killed at every step of a jailed start, then started again: the VM is running and
// tracked, or shut off with its disk given back and no jail left; either way it then starts,
// stops and gives its disk back normally.
TEST_F(JailedManagerTest, DaemonKilledAtEveryStepOfAJailedStart_DiskAndJailAreNeverLeftBehind) {
    char const* const steps[] = { "start:intent",  "start:cgroup",   "spawn:before-go-ahead",
                                  "start:spawned", "start:recorded", "start:committed",
                                  "start:ready" };
    ::kill(m_daemon_pid, SIGTERM);
    ::waitpid(m_daemon_pid, nullptr, 0);
    m_daemon_pid = 0;
    int index = 0;
    for (char const* step : steps) {
        SCOPED_TRACE(step);
        std::string const name = fmt::format("crash{}", index++);
        start_daemon({}, step);
        ASSERT_EQ(ctl({ "define", define(name, "idle") }).exit_status, 0);
        EXPECT_NE(ctl({ "start", name }).exit_status, 0) << "kvmmd did not die at " << step;
        ::waitpid(m_daemon_pid, nullptr, 0);
        m_daemon_pid = 0;
        start_daemon({});
        auto const vm = info(name);
        struct stat disk {};
        if (vm["state"] == "running") {
            pid_t const pid = vm["pid"].get<pid_t>();
            // The adopted process may still be the jailer, building the jail as root.
            auto const deadline = std::chrono::steady_clock::now() + 10s;
            while (status_field(pid, "Uid") == "0" && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(10ms);
            EXPECT_NE(status_field(pid, "Uid"), "0");
            auto cgroup = Cgroup::open_existing(m_cgroup_parent, name);
            ASSERT_TRUE(cgroup);
            EXPECT_EQ(MUST(cgroup->processes()), std::vector<pid_t> { pid });
            EXPECT_EQ(ctl({ "destroy", name }).exit_status, 0);
        } else {
            EXPECT_EQ(vm["state"], "shut off") << vm.dump() << "\n"
                                               << read_file(m_dir + "/state/logs/" + name + ".kvmm.log");
        }
        ASSERT_EQ(::stat((m_dir + "/disk.img").c_str(), &disk), 0);
        EXPECT_EQ(disk.st_uid, 1234u);
        EXPECT_EQ(disk.st_nlink, 1u);
        EXPECT_TRUE(!fs::exists(m_dir + "/state/jail/kvmm") || fs::is_empty(m_dir + "/state/jail/kvmm"));
        auto const again = ctl({ "start", name });
        EXPECT_EQ(again.exit_status, 0) << again.standard_error;
        EXPECT_EQ(ctl({ "destroy", name }).exit_status, 0);
        EXPECT_EQ(ctl({ "undefine", name }).exit_status, 0);
        ASSERT_EQ(::stat((m_dir + "/disk.img").c_str(), &disk), 0);
        EXPECT_EQ(disk.st_uid, 1234u);
        ::kill(m_daemon_pid, SIGTERM);
        ::waitpid(m_daemon_pid, nullptr, 0);
        m_daemon_pid = 0;
    }
    start_daemon({});
}

TEST_F(JailedManagerTest, TenVmsStartedAtOnce_GetTenDistinctUidsAndLeaveNoJailBehind) {
    constexpr int COUNT = 10;
    for (int i = 0; i < COUNT; ++i)
        ASSERT_EQ(ctl({ "define", define(fmt::format("many{}", i), "idle", false) }).exit_status, 0);
    std::vector<std::thread> starts;
    std::atomic<int> failures { 0 };
    for (int i = 0; i < COUNT; ++i)
        starts.emplace_back([&, i] {
            auto client = DaemonClient::connect(m_socket, 5s);
            if (!client || !client->call({ { "verb", "start" }, { "name", fmt::format("many{}", i) } }, 30s))
                ++failures;
        });
    for (auto& thread : starts)
        thread.join();
    EXPECT_EQ(failures.load(), 0) << read_file(m_dir + "/kvmmd.log");
    std::set<std::string> uids;
    for (int i = 0; i < COUNT; ++i) {
        auto const vm = info(fmt::format("many{}", i));
        ASSERT_TRUE(vm["pid"].is_number()) << vm.dump();
        uids.insert(status_field(vm["pid"].get<pid_t>(), "Uid"));
    }
    EXPECT_EQ(uids.size(), static_cast<size_t>(COUNT));
    for (int i = 0; i < COUNT; ++i)
        EXPECT_EQ(ctl({ "destroy", fmt::format("many{}", i) }).exit_status, 0);
    EXPECT_TRUE(fs::is_empty(m_dir + "/state/jail/kvmm"));
}

TEST_F(JailedManagerTest, DiskOnAnotherFileSystem_StartRefusesNamingItAndChangesNothing) {
    if (!fs::exists("/dev/shm"))
        GTEST_SKIP() << "no /dev/shm";
    struct stat shm {
    }, here {};
    ASSERT_EQ(::stat("/dev/shm", &shm), 0);
    ASSERT_EQ(::stat(m_dir.c_str(), &here), 0);
    if (shm.st_dev == here.st_dev)
        GTEST_SKIP() << "/dev/shm is on the test directory's file system";
    std::string const disk = fmt::format("/dev/shm/kvmmd-jail-test-{}.img", ::getpid());
    std::ofstream(disk) << std::string(4096, 'd');
    std::string const path = m_dir + "/far.toml";
    std::ofstream(path) << fmt::format("name = \"far\"\nmemory = 16\nkernel = \"{}/guest\"\ncmdline = \"test=hlt\"\n"
                                       "[[disk]]\npath = \"{}\"\n",
                                       m_dir, disk);
    ASSERT_EQ(ctl({ "define", path }).exit_status, 0);
    auto started = ctl({ "start", "far" });
    EXPECT_NE(started.exit_status, 0);
    EXPECT_NE(started.standard_error.find(disk), std::string::npos) << started.standard_error;
    EXPECT_NE(started.standard_error.find("another file system"), std::string::npos) << started.standard_error;
    struct stat disk_status {};
    ASSERT_EQ(::stat(disk.c_str(), &disk_status), 0);
    EXPECT_EQ(disk_status.st_uid, 0u);
    EXPECT_EQ(info("far")["state"], "shut off");
    EXPECT_TRUE(fs::is_empty(m_dir + "/state/jail/kvmm"));
    ::unlink(disk.c_str());
}

// kvmmctl clone under the jail: the overlay's header names its base by its host path, which
// kvmm opens inside the jail; prepare_jail links it there read-only.
TEST_F(JailedManagerTest, CloneOfAVm_BootsJailedReadingTheBaseThroughTheOverlayAndLeavesTheBaseAlone) {
    std::string const base = m_dir + "/base.raw";
    std::string contents(1 << 20, '\0');
    contents.replace(0, 14, "KVMM-DISK-TEST");
    std::ofstream(base, std::ios::binary) << contents;
    ::chmod(base.c_str(), 0644);
    std::string const path = m_dir + "/source.toml";
    std::ofstream(path) << fmt::format("name = \"source\"\nmemory = 16\nkernel = \"{}/guest\"\ncmdline = "
                                       "\"test=virtio-blk\"\n[[disk]]\npath = \"{}\"\nid = \"root\"\n",
                                       m_dir, base);
    ASSERT_EQ(ctl({ "define", path }).exit_status, 0);
    auto const cloned = ctl({ "clone", "source", "copy" });
    ASSERT_EQ(cloned.exit_status, 0) << cloned.standard_error;

    auto const started = ctl({ "start", "copy" });
    ASSERT_EQ(started.exit_status, 0) << started.standard_error;
    auto const deadline = std::chrono::steady_clock::now() + 20s;
    while (info("copy")["state"] == "running" && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(100ms);
    EXPECT_EQ(info("copy")["state"], "shut off");
    auto const logs = ctl({ "logs", "copy" }).standard_output;
    EXPECT_NE(logs.find("kvmm-test: virtio-blk ok"), std::string::npos)
        << logs << read_file(m_dir + "/state/logs/copy.kvmm.log");
    // The guest's write went to the overlay; the base is as it was, its owner and links too.
    EXPECT_EQ(read_file(base), contents);
    struct stat base_status {};
    ASSERT_EQ(::stat(base.c_str(), &base_status), 0);
    EXPECT_EQ(base_status.st_uid, 0u);
    EXPECT_EQ(base_status.st_nlink, 1u) << "the link into the jail is gone";
    EXPECT_EQ(base_status.st_mode & 07777, 0644u);
}

// kvmmctl snapshot, save and restore of a jailed VM: kvmm writes in its jail root and kvmmd
// moves the files to where they were asked for (root's, 0600); a restore hands them back in.
// `save_directory` on another file system than the jail base takes the copying path.

TEST_F(JailedManagerTest, SaveRestoreAndSnapshotOfAJailedVm_TheGuestGoesOnFromWhereItWas) {
    ASSERT_EQ(ctl({ "define", define("saver", "counter") }).exit_status, 0);
    check_save_and_restore(m_dir);
}

TEST_F(JailedManagerTest, SaveOfAJailedVmToAnotherFileSystem_IsCopiedOutAndRestoresFromThere) {
    struct stat shm {};
    if (::stat("/dev/shm", &shm) != 0)
        GTEST_SKIP() << "no /dev/shm";
    struct stat here {};
    ASSERT_EQ(::stat(m_dir.c_str(), &here), 0);
    ASSERT_NE(shm.st_dev, here.st_dev) << "/dev/shm is on the test directory's file system";
    char pattern[] = "/dev/shm/kvmmd-jail-save-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    std::string const elsewhere = pattern;
    ASSERT_EQ(ctl({ "define", define("saver", "counter") }).exit_status, 0);
    check_save_and_restore(elsewhere);
    fs::remove_all(elsewhere);
}

} // namespace
} // namespace kvmm

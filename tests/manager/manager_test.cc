// kvmmd and kvmmctl with real VMs: a kvmmd started by the test in a temporary state directory,
// driven through kvmmctl (the administrator's view) and through the protocol client (for the
// concurrent cases), running the project's test guest.
#include "base/thread_annotations.h"
#include "child_process.h"
#include "manager/cgroup.h"
#include "manager/crash_point.h"
#include "manager/protocol.h"
#include "manager/supervisor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace kvmm {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

class ManagerTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (auto reason = testing::kvm_unavailable_reason(); !reason.empty())
            GTEST_SKIP() << reason;
        char pattern[] = "/tmp/kvmmd-test-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        m_state_dir = pattern;
        m_socket = m_state_dir + "/kvmmd.sock";
        m_cgroup_parent = fmt::format("kvmm-test-{}", ::getpid());
        start_daemon();
    }

    void TearDown() override {
        if (m_daemon_pid > 0) {
            // Leave nothing running: destroy every VM, then stop the daemon.
            if (auto listed = call({ { "verb", "list" } })) {
                for (auto const& vm : (*listed)["vms"])
                    (void)call({ { "verb", "destroy" }, { "name", vm["name"] } });
            }
            stop_daemon(SIGTERM);
        }
        for (auto const& hierarchy : { "cpu", "cpuacct", "memory" })
            ::rmdir(fmt::format("/sys/fs/cgroup/{}/{}", hierarchy, m_cgroup_parent).c_str());
        if (!m_state_dir.empty())
            fs::remove_all(m_state_dir);
    }

    // Starts kvmmd and waits until it answers. `crash_at` sets its crash test hook
    // (manager/crash_point.h); `arguments` are added to its command line.
    void start_daemon(std::string const& crash_at = {}, std::vector<std::string> const& arguments = {}) {
        // These tests are about supervision and run in sanitizer builds, which cannot run jailed
        // (docs/jailer.md); jailed_manager_test.cc runs kvmmd with its jail.
        std::vector<std::string> argv = {
            KVMMD_BINARY, "--state-dir", m_state_dir,       "--socket",      m_socket,
            "--kvmm",     KVMM_BINARY,   "--cgroup-parent", m_cgroup_parent, "--no-jail"
        };
        argv.insert(argv.end(), arguments.begin(), arguments.end());
        pid_t const pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            std::string const log = m_state_dir + "/kvmmd.log";
            FILE* out = std::freopen(log.c_str(), "a", stderr);
            (void)out;
            if (crash_at.empty())
                ::unsetenv(CRASH_AT_VARIABLE);
            else
                ::setenv(CRASH_AT_VARIABLE, crash_at.c_str(), 1);
            std::vector<char*> pointers;
            for (auto& argument : argv)
                pointers.push_back(argument.data());
            pointers.push_back(nullptr);
            ::execv(KVMMD_BINARY, pointers.data());
            ::_exit(127);
        }
        m_daemon_pid = pid;
        for (int i = 0; i < 500; ++i) {
            if (auto client = DaemonClient::connect(m_socket, 100ms);
                client && client->call({ { "verb", "list" } }, 1s))
                return;
            if (::waitpid(pid, nullptr, WNOHANG) == pid) {
                m_daemon_pid = 0;
                FAIL() << "kvmmd exited at start: " << read_file(m_state_dir + "/kvmmd.log");
            }
            std::this_thread::sleep_for(10ms);
        }
        FAIL() << "kvmmd did not answer on its socket";
    }

    void stop_daemon(int signal_number) {
        ::kill(m_daemon_pid, signal_number);
        ::waitpid(m_daemon_pid, nullptr, 0);
        m_daemon_pid = 0;
    }

    // Every call is bounded: a test must fail, not hang, when kvmmd does not answer.
    Expected<json> call(json const& request) {
        auto client = TRY(DaemonClient::connect(m_socket, 5s));
        return client.call(request, 60s);
    }

    static std::string read_file(std::string const& path) {
        std::ifstream stream(path);
        return std::string((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
    }

    // Live processes (not zombies) other than the current daemon whose command line mentions
    // this test's state directory: kvmm processes and kvmmd's forked children before exec.
    std::vector<pid_t> processes_of_state_dir() const {
        std::vector<pid_t> found;
        for (auto const& entry : fs::directory_iterator("/proc")) {
            pid_t const pid = std::atoi(entry.path().filename().c_str());
            if (pid <= 0 || pid == m_daemon_pid || pid == ::getpid())
                continue;
            std::string const text = read_file((entry.path() / "cmdline").string());
            if (text.find(m_state_dir) == std::string::npos)
                continue;
            std::string const stat = read_file((entry.path() / "stat").string());
            auto const close = stat.rfind(')');
            if (close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z')
                found.push_back(pid);
        }
        return found;
    }

    // The processes in VM `name`'s cgroup (cpu hierarchy); nullopt when it does not exist.
    std::optional<std::vector<pid_t>> cgroup_members(std::string const& name) const {
        auto cgroup = Cgroup::open_existing(m_cgroup_parent, name);
        if (!cgroup)
            return std::nullopt;
        return MUST(cgroup->processes());
    }

    testing::ProcessResult ctl(std::vector<std::string> arguments, std::chrono::milliseconds limit = 30s) {
        arguments.insert(arguments.begin(), { KVMMCTL_BINARY, "--socket", m_socket });
        return testing::run_process(arguments, {}, limit);
    }

    std::string write_definition(std::string const& name, std::string const& scenario, std::string const& extra = {}) {
        std::string const path = fmt::format("{}/{}.toml", m_state_dir, name);
        std::ofstream(path) << fmt::format("name = \"{}\"\nmemory = 16\nkernel = \"{}\"\ncmdline = \"test={}\"\n{}",
                                           name, testing::test_guest(), scenario, extra);
        return path;
    }

    json info(std::string const& name) {
        auto answer = call({ { "verb", "info" }, { "name", name } });
        EXPECT_TRUE(answer) << (answer ? "" : answer.error().message());
        return answer ? *answer : json::object();
    }

    // Waits until `predicate(info)` holds; returns the last info.
    json wait_for(std::string const& name, std::function<bool(json const&)> const& predicate,
                  std::chrono::milliseconds limit = 10s) {
        auto const deadline = std::chrono::steady_clock::now() + limit;
        json last;
        while (std::chrono::steady_clock::now() < deadline) {
            last = info(name);
            if (predicate(last))
                return last;
            std::this_thread::sleep_for(20ms);
        }
        return last;
    }

    size_t daemon_fd_count() const {
        size_t count = 0;
        for ([[maybe_unused]] auto const& entry : fs::directory_iterator(fmt::format("/proc/{}/fd", m_daemon_pid)))
            ++count;
        return count;
    }

    // kvmm processes started for this test's state directory that are still alive (not zombies).
    size_t live_kvmm_processes() const {
        size_t count = 0;
        for (auto const& entry : fs::directory_iterator("/proc")) {
            std::ifstream cmdline(entry.path() / "cmdline");
            std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
            if (text.find(m_state_dir + "/runtime/") == std::string::npos ||
                text.find("--control-sock") == std::string::npos)
                continue;
            std::ifstream stat(entry.path() / "stat");
            std::string stat_text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
            auto const close = stat_text.rfind(')');
            if (close != std::string::npos && stat_text.size() > close + 2 && stat_text[close + 2] != 'Z')
                ++count;
        }
        return count;
    }

    std::string m_state_dir;
    std::string m_socket;
    std::string m_cgroup_parent;
    pid_t m_daemon_pid { 0 };
};

TEST_F(ManagerTest, VerbRoundTrip_DefineStartSuspendResumeShutdownUndefine) {
    auto defined = ctl({ "define", write_definition("round", "keyboard-wait") });
    ASSERT_EQ(defined.exit_status, 0) << defined.standard_error;
    auto listed = ctl({ "list", "--all" });
    EXPECT_NE(listed.standard_output.find("round"), std::string::npos);
    EXPECT_NE(listed.standard_output.find("shut off"), std::string::npos);

    ASSERT_EQ(ctl({ "start", "round" }).exit_status, 0);
    auto running = json::parse(ctl({ "info", "round", "--json" }).standard_output);
    EXPECT_EQ(running["state"], "running");
    ASSERT_TRUE(running["pid"].is_number());
    EXPECT_NE(ctl({ "list" }).standard_output.find("running"), std::string::npos);

    ASSERT_EQ(ctl({ "suspend", "round" }).exit_status, 0);
    EXPECT_EQ(info("round")["state"], "paused");
    ASSERT_EQ(ctl({ "resume", "round" }).exit_status, 0);
    EXPECT_EQ(info("round")["state"], "running");

    auto metrics = ctl({ "metrics" });
    EXPECT_NE(metrics.standard_output.find("kvmm_vm_state{name=\"round\",state=\"running\"} 1"), std::string::npos);
    EXPECT_NE(metrics.standard_output.find("kvmm_vm_vcpu_exits_total{name=\"round\",vcpu=\"0\",reason=\"io\"}"),
              std::string::npos)
        << metrics.standard_output;

    // The guest powers off on Ctrl+Alt+Del: a clean shutdown, well before the timeout.
    auto shutdown = ctl({ "shutdown", "round", "--timeout", "20" });
    ASSERT_EQ(shutdown.exit_status, 0) << shutdown.standard_error;
    auto stopped = info("round");
    EXPECT_EQ(stopped["state"], "shut off");
    EXPECT_EQ(stopped["last_exit"]["exit_status"], 0);
    auto logs = ctl({ "logs", "round" });
    EXPECT_NE(logs.standard_output.find("kvmm-test: waiting for ctrl-alt-del"), std::string::npos)
        << logs.standard_output;
    EXPECT_NE(logs.standard_output.find("ctrl-alt-del received"), std::string::npos) << logs.standard_output;

    ASSERT_EQ(ctl({ "undefine", "round" }).exit_status, 0);
    EXPECT_EQ(ctl({ "list", "--all" }).standard_output.find("round"), std::string::npos);
    EXPECT_FALSE(fs::exists(m_state_dir + "/definitions/round.toml"));
}

TEST_F(ManagerTest, BadInput_ExitsOneWithOneErrorLineAndChangesNothing) {
    ASSERT_EQ(ctl({ "define", write_definition("good", "idle") }).exit_status, 0);
    auto const before = ctl({ "list", "--all", "--json" }).standard_output;
    auto const definition_before = fs::last_write_time(m_state_dir + "/definitions/good.toml");

    std::string const malformed = m_state_dir + "/malformed.toml";
    std::ofstream(malformed) << "name = \"x\"\nvcpus = [\n";
    std::string const unknown = write_definition("unknown", "idle", "colour = \"blue\"\n");
    std::string const missing_kernel = m_state_dir + "/missing.toml";
    std::ofstream(missing_kernel) << "name = \"missing\"\nkernel = \"/nonexistent/vmlinux\"\n";
    std::string const slash = m_state_dir + "/slash.toml";
    std::ofstream(slash) << fmt::format("name = \"a/b\"\nkernel = \"{}\"\n", testing::test_guest());
    std::vector<std::pair<std::vector<std::string>, std::string>> const cases = {
        { { "define", malformed }, "" },
        { { "define", unknown }, "colour" },
        { { "define", write_definition("good", "hello") }, "already defined" },
        { { "define", missing_kernel }, "/nonexistent/vmlinux" },
        { { "define", slash }, "a/b" },
        { { "start", "nosuchvm" }, "not defined" },
        { { "resume", "good" }, "shut off" },
        { { "destroy", "good" }, "not running" },
        { { "shutdown", "good" }, "not running" },
        { { "info", "../etc" }, "" },
    };
    for (auto const& [arguments, needle] : cases) {
        auto result = ctl(arguments);
        EXPECT_EQ(result.exit_status, 1) << arguments[0] << " " << arguments[1];
        EXPECT_TRUE(result.standard_error.starts_with("kvmmctl: error: ")) << result.standard_error;
        EXPECT_EQ(std::count(result.standard_error.begin(), result.standard_error.end(), '\n'), 1)
            << result.standard_error;
        EXPECT_NE(result.standard_error.find(needle), std::string::npos) << result.standard_error;
    }
    // A running VM: start again and undefine are refused.
    ASSERT_EQ(ctl({ "start", "good" }).exit_status, 0);
    EXPECT_EQ(ctl({ "start", "good" }).exit_status, 1);
    EXPECT_EQ(ctl({ "undefine", "good" }).exit_status, 1);
    ASSERT_EQ(ctl({ "destroy", "good" }).exit_status, 0);

    EXPECT_EQ(ctl({ "list", "--all", "--json" }).standard_output, before);
    EXPECT_EQ(fs::last_write_time(m_state_dir + "/definitions/good.toml"), definition_before);
    EXPECT_EQ(std::distance(fs::directory_iterator(m_state_dir + "/definitions"), fs::directory_iterator()), 1);
}

TEST_F(ManagerTest, KilledKvmm_IsCrashedAndRestartedPerPolicy) {
    ASSERT_EQ(ctl({ "define", write_definition("phoenix", "idle", "restart = \"on-failure\"\n") }).exit_status, 0);
    ASSERT_EQ(ctl({ "define", write_definition("mortal", "idle") }).exit_status, 0);
    ASSERT_EQ(ctl({ "start", "phoenix" }).exit_status, 0);
    ASSERT_EQ(ctl({ "start", "mortal" }).exit_status, 0);
    int const phoenix_pid = info("phoenix")["pid"].get<int>();
    int const mortal_pid = info("mortal")["pid"].get<int>();
    ASSERT_EQ(::kill(phoenix_pid, SIGKILL), 0);
    ASSERT_EQ(::kill(mortal_pid, SIGKILL), 0);

    auto mortal = wait_for("mortal", [](json const& vm) { return vm["state"] == "crashed"; });
    EXPECT_EQ(mortal["state"], "crashed");
    EXPECT_EQ(mortal["last_exit"]["signal"], SIGKILL);
    EXPECT_NE(mortal["last_exit"]["reason"].get<std::string>().find("signal 9"), std::string::npos);

    auto phoenix = wait_for("phoenix", [&](json const& vm) {
        return vm["state"] == "running" && vm["pid"].is_number() && vm["pid"] != phoenix_pid;
    });
    EXPECT_EQ(phoenix["state"], "running");
    EXPECT_EQ(phoenix["restarts"], 1);
    EXPECT_EQ(phoenix["last_exit"]["signal"], SIGKILL);
}

TEST_F(ManagerTest, DaemonKilledAndRestarted_FiveRunningVmsAreKeptAndControllable) {
    std::map<std::string, int> pids;
    for (int i = 0; i < 5; ++i) {
        std::string const name = fmt::format("keep{}", i);
        ASSERT_EQ(ctl({ "define", write_definition(name, "idle") }).exit_status, 0);
        ASSERT_EQ(ctl({ "start", name }).exit_status, 0);
        pids[name] = info(name)["pid"].get<int>();
    }
    stop_daemon(SIGKILL);
    start_daemon();
    auto listed = MUST(call({ { "verb", "list" } }));
    ASSERT_EQ(listed["vms"].size(), 5u);
    for (auto const& vm : listed["vms"]) {
        EXPECT_EQ(vm["state"], "running");
        EXPECT_EQ(vm["pid"], pids[vm["name"].get<std::string>()]);
    }
    ASSERT_EQ(ctl({ "suspend", "keep0" }).exit_status, 0);
    EXPECT_EQ(info("keep0")["state"], "paused");
    ASSERT_EQ(ctl({ "resume", "keep0" }).exit_status, 0);
    EXPECT_TRUE(info("keep1")["cpu_time_ns"].is_number());
    for (auto const& [name, pid] : pids) {
        auto destroyed = ctl({ "destroy", name });
        EXPECT_EQ(destroyed.exit_status, 0) << destroyed.standard_error;
        EXPECT_EQ(info(name)["state"], "shut off");
    }
    // The kvmm processes were orphaned by the killed daemon: reap any that came to us.
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    EXPECT_EQ(live_kvmm_processes(), 0u);
}

TEST_F(ManagerTest, AutostartVms_StartWithTheDaemonAndTheOthersStayOff) {
    ASSERT_EQ(ctl({ "define", write_definition("auto", "idle", "autostart = true\n") }).exit_status, 0);
    ASSERT_EQ(ctl({ "define", write_definition("manual", "idle") }).exit_status, 0);
    ASSERT_EQ(ctl({ "define", write_definition("toggled", "idle") }).exit_status, 0);
    ASSERT_EQ(ctl({ "autostart", "toggled", "on" }).exit_status, 0);
    EXPECT_EQ(info("auto")["state"], "shut off") << "autostart acts when kvmmd starts, not at define";
    stop_daemon(SIGTERM);
    start_daemon();
    auto const running = [](json const& vm) { return vm["state"] == "running"; };
    EXPECT_EQ(wait_for("auto", running)["state"], "running");
    EXPECT_EQ(wait_for("toggled", running)["state"], "running");
    EXPECT_EQ(info("manual")["state"], "shut off");
    EXPECT_TRUE(info("toggled")["autostart"].get<bool>());
    // A daemon restarted while they run re-attaches them rather than starting second copies.
    int const pid = info("auto")["pid"].get<int>();
    stop_daemon(SIGTERM);
    start_daemon();
    EXPECT_EQ(info("auto")["pid"].get<int>(), pid);
    EXPECT_EQ(live_kvmm_processes(), 2u);
}

TEST_F(ManagerTest, Console_ShowsScrollbackCarriesInputBothWaysAndDetachesOnCtrlBracket) {
    ASSERT_EQ(ctl({ "define", write_definition("talk", "echo") }).exit_status, 0);
    ASSERT_EQ(ctl({ "start", "talk" }).exit_status, 0);
    auto wait_for_log = [&](std::string const& text) {
        auto const deadline = std::chrono::steady_clock::now() + 10s;
        while (ctl({ "logs", "talk" }).standard_output.find(text) == std::string::npos &&
               std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(50ms);
    };
    wait_for_log("ready");
    auto console = [&](std::string const& typed, std::chrono::milliseconds limit) {
        return testing::run_process({ KVMMCTL_BINARY, "--socket", m_socket, "console", "talk" }, typed, limit);
    };
    // Ctrl-] detaches and leaves the VM running; what was typed before it reaches the guest.
    auto const first = console("first\n\x1d", 10s);
    EXPECT_EQ(first.exit_status, 0) << first.standard_error;
    EXPECT_NE(first.standard_error.find("escape character is ^]"), std::string::npos) << first.standard_error;
    EXPECT_EQ(info("talk")["state"], "running");
    // Attached again: the earlier echo comes first (kvmm's history), however late it was
    // written; "quit" ends the guest, and with it the console.
    auto const second = console("second\nquit\n", 20s);
    EXPECT_EQ(second.exit_status, 0) << second.standard_error;
    EXPECT_EQ(second.standard_output.find("ready\necho: first\n"), 0u) << second.standard_output;
    EXPECT_NE(second.standard_output.find("echo: second"), std::string::npos) << second.standard_output;
    EXPECT_NE(second.standard_output.find("kvmm-test: echo ok"), std::string::npos) << second.standard_output;
    EXPECT_EQ(wait_for("talk", [](json const& vm) { return vm["state"] == "shut off"; })["state"], "shut off");
}

TEST_F(ManagerTest, DaemonRestart_ConsoleLogKeepsWhatWasMissedWithoutRepeats) {
    ASSERT_EQ(ctl({ "define", write_definition("chat", "echo") }).exit_status, 0);
    ASSERT_EQ(ctl({ "start", "chat" }).exit_status, 0);
    auto const log_path = fmt::format("{}/logs/chat.log", m_state_dir);
    auto const read_log = [&] {
        std::ifstream stream(log_path);
        return std::string((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
    };
    auto const wait_for_log = [&](std::string const& text) {
        auto const deadline = std::chrono::steady_clock::now() + 10s;
        while (read_log().find(text) == std::string::npos && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(20ms);
        return read_log().find(text) != std::string::npos;
    };
    ASSERT_TRUE(wait_for_log("ready\n")) << read_log();
    auto const console_socket = info("chat")["console_socket"].get<std::string>();
    stop_daemon(SIGKILL);
    {
        // The guest talks while kvmmd is down.
        auto console = MUST(connect_unix_socket(console_socket));
        ASSERT_TRUE(send_all(console.get(), "while down\n"));
        std::string seen;
        char buffer[256];
        while (seen.find("echo: while down") == std::string::npos) {
            ssize_t const got = ::recv(console.get(), buffer, sizeof(buffer), 0);
            ASSERT_GT(got, 0) << seen;
            seen.append(buffer, static_cast<size_t>(got));
        }
    }
    start_daemon();
    ASSERT_TRUE(wait_for_log("echo: while down\n")) << read_log();
    ASSERT_EQ(
        testing::run_process({ KVMMCTL_BINARY, "--socket", m_socket, "console", "chat" }, "quit\n", 20s).exit_status,
        0);
    ASSERT_TRUE(wait_for_log("echo ok\n")) << read_log();
    // The restarted daemon logged the missed line once and repeated nothing it had before.
    EXPECT_EQ(read_log(), "ready\necho: while down\nkvmm-test: echo ok\n");
}

TEST_F(ManagerTest, CpuWeights_OneToThree_GiveCpuTimeInThatRatio) {
    std::string const pin = "[pinning]\nvcpu0 = [0]\n";
    ASSERT_EQ(ctl({ "define", write_definition("light", "busy", "[resources]\ncpu_weight = 100\n" + pin) }).exit_status,
              0);
    ASSERT_EQ(ctl({ "define", write_definition("heavy", "busy", "[resources]\ncpu_weight = 300\n" + pin) }).exit_status,
              0);
    ASSERT_EQ(ctl({ "start", "light" }).exit_status, 0);
    ASSERT_EQ(ctl({ "start", "heavy" }).exit_status, 0);
    std::this_thread::sleep_for(1s);
    auto cpu = [&](std::string const& name) { return info(name)["cpu_time_ns"].get<uint64_t>(); };
    uint64_t const light_start = cpu("light"), heavy_start = cpu("heavy");
    std::this_thread::sleep_for(10s);
    double const light = static_cast<double>(cpu("light") - light_start);
    double const heavy = static_cast<double>(cpu("heavy") - heavy_start);
    ASSERT_GT(light, 0.0);
    double const ratio = heavy / light;
    std::printf("CPU time over 10 s: light %.3f s, heavy %.3f s, ratio %.3f (expected 3)\n", light / 1e9, heavy / 1e9,
                ratio);
    EXPECT_NEAR(ratio, 3.0, 3.0 * 0.15);
}

TEST_F(ManagerTest, FiftyVms_ConcurrentLifecycle_LeavesNothingBehind) {
    constexpr int COUNT = 50;
    std::this_thread::sleep_for(1100ms); // let the daemon join the client threads of SetUp
    size_t const fds_before = daemon_fd_count();
    auto in_parallel = [&](std::function<Expected<json>(int)> const& work) {
        std::atomic<int> failures { 0 };
        std::vector<std::thread> threads;
        std::string first_error;
        Mutex lock;
        for (int i = 0; i < COUNT; ++i) {
            threads.emplace_back([&, i] {
                auto result = work(i);
                if (!result) {
                    ++failures;
                    MutexLock guard(lock);
                    first_error = result.error().message();
                }
            });
        }
        for (auto& thread : threads)
            thread.join();
        EXPECT_EQ(failures.load(), 0) << first_error;
    };
    auto name = [](int i) { return fmt::format("many{:02}", i); };
    in_parallel([&](int i) {
        std::ifstream file(write_definition(name(i), "idle"));
        std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
        return call({ { "verb", "define" }, { "toml", text } });
    });
    in_parallel([&](int i) { return call({ { "verb", "start" }, { "name", name(i) } }); });
    auto listed = MUST(call({ { "verb", "list" } }));
    EXPECT_EQ(listed["vms"].size(), static_cast<size_t>(COUNT));
    EXPECT_EQ(live_kvmm_processes(), static_cast<size_t>(COUNT));
    in_parallel([&](int i) { return call({ { "verb", "destroy" }, { "name", name(i) } }); });
    in_parallel([&](int i) { return call({ { "verb", "undefine" }, { "name", name(i) } }); });

    EXPECT_EQ(MUST(call({ { "verb", "list" }, { "all", true } }))["vms"].size(), 0u);
    EXPECT_EQ(live_kvmm_processes(), 0u);
    for (auto const& hierarchy : { "cpu", "cpuacct", "memory" }) {
        fs::path const parent = fmt::format("/sys/fs/cgroup/{}/{}", hierarchy, m_cgroup_parent);
        if (!fs::exists(parent))
            continue;
        for (auto const& entry : fs::directory_iterator(parent))
            EXPECT_FALSE(entry.is_directory()) << "leaked cgroup " << entry.path();
    }
    size_t sockets = 0;
    for (auto const& entry : fs::recursive_directory_iterator(m_state_dir + "/runtime"))
        sockets += entry.is_socket() ? 1U : 0U;
    EXPECT_EQ(sockets, 0u);
    std::this_thread::sleep_for(1100ms); // finished client threads are joined within a second
    EXPECT_EQ(daemon_fd_count(), fds_before);
}

// kvmmd killed (the crash test hook: SIGKILL to itself) at every step of a start, then started
// again: the new daemon starts at once and answers, nothing is stuck, orphaned or duplicated,
// and the VM is either running and tracked (the runtime record was written) or shut off with
// its runtime state and cgroup cleaned up. Then the VM starts, stops and is undefined normally.
TEST_F(ManagerTest, DaemonKilledAtEveryStepOfStart_NextDaemonAdoptsOrCleansUp) {
    struct Step {
        char const* name;
        bool recorded; // runtime.json was written before the kill
    };
    Step const steps[] = {
        { "start:intent", false },  { "before-rename:intent.json", false },
        { "start:cgroup", false },  { "spawn:before-go-ahead", false },
        { "start:spawned", false }, { "before-rename:runtime.json", false },
        { "start:recorded", true }, { "start:committed", true },
        { "start:ready", true },
    };
    stop_daemon(SIGTERM);
    int index = 0;
    for (auto const& step : steps) {
        SCOPED_TRACE(step.name);
        std::string const name = fmt::format("crash{}", index++);
        start_daemon(step.name);
        ASSERT_TRUE(call({ { "verb", "define" }, { "toml", read_file(write_definition(name, "idle")) } }));
        auto started = call({ { "verb", "start" }, { "name", name } });
        EXPECT_FALSE(started) << "kvmmd did not die at " << step.name;
        int status = 0;
        ASSERT_EQ(::waitpid(m_daemon_pid, &status, 0), m_daemon_pid);
        EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        m_daemon_pid = 0;

        auto const restart = std::chrono::steady_clock::now();
        start_daemon();
        auto const answered = std::chrono::steady_clock::now() - restart;
        std::printf("killed at %-28s new kvmmd answered after %4lld ms\n", step.name,
                    static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(answered).count()));
        EXPECT_LT(answered, 5s);
        auto const listed = ctl({ "--daemon-timeout", "5", "list", "--all" }, 15s);
        EXPECT_EQ(listed.exit_status, 0) << listed.standard_error;

        auto const vm = info(name);
        auto const processes = processes_of_state_dir();
        auto const members = cgroup_members(name);
        auto const runtime = fs::path(m_state_dir) / "runtime" / name;
        EXPECT_FALSE(fs::exists(runtime / "intent.json"));
        EXPECT_FALSE(fs::exists(runtime / "runtime.json.tmp"));
        EXPECT_FALSE(fs::exists(runtime / "intent.json.tmp"));
        if (step.recorded) {
            EXPECT_EQ(vm["state"], "running");
            ASSERT_TRUE(vm["pid"].is_number());
            pid_t const pid = vm["pid"].get<pid_t>();
            EXPECT_EQ(processes, std::vector<pid_t> { pid }) << "one kvmm, the tracked one";
            EXPECT_EQ(members, std::optional(std::vector<pid_t> { pid }));
            EXPECT_TRUE(fs::exists(runtime / "runtime.json"));
            EXPECT_EQ(ctl({ "undefine", name }).exit_status, 1) << "undefined while running";
            EXPECT_EQ(ctl({ "destroy", name }).exit_status, 0);
        } else {
            EXPECT_EQ(vm["state"], "shut off");
            EXPECT_TRUE(vm["pid"].is_null());
            EXPECT_TRUE(processes.empty()) << "stuck child or orphan kvmm: " << processes.size() << " process(es)";
            EXPECT_TRUE(!members || members->empty());
            EXPECT_TRUE(!fs::exists(runtime) || fs::is_empty(runtime)) << "runtime state left behind";
        }
        // Nothing left over stands in the way of a normal start, stop and undefine.
        auto const again = ctl({ "start", name });
        EXPECT_EQ(again.exit_status, 0) << again.standard_error;
        EXPECT_EQ(processes_of_state_dir().size(), 1u);
        EXPECT_EQ(ctl({ "destroy", name }).exit_status, 0);
        auto const undefined = ctl({ "undefine", name });
        EXPECT_EQ(undefined.exit_status, 0) << undefined.standard_error;
        EXPECT_TRUE(processes_of_state_dir().empty());
        stop_daemon(SIGTERM);
    }
    start_daemon(); // for TearDown
}

// A second kvmmd started by mistake on a live daemon's state directory must not run its recovery:
// to it, the kvmm that the live daemon is starting (in the VM's cgroup, not yet recorded) looks
// like an orphan to stop. It exits at once, and nothing is stopped or removed.
TEST_F(ManagerTest, SecondDaemonOnALiveStateDirectory_ExitsAtOnceAndTouchesNothing) {
    ASSERT_TRUE(call({ { "verb", "define" }, { "toml", read_file(write_definition("steady", "idle")) } }));
    ASSERT_EQ(ctl({ "start", "steady" }).exit_status, 0);
    pid_t const steady_pid = info("steady")["pid"].get<pid_t>();
    // "starting": defined, a process in its cgroup that no runtime record names yet, and a
    // record being written (the state a start is in between spawning kvmm and recording it).
    ASSERT_TRUE(call({ { "verb", "define" }, { "toml", read_file(write_definition("starting", "idle")) } }));
    auto cgroup = MUST(Cgroup::create(m_cgroup_parent, "starting", {}));
    UniqueFd null_fd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    auto starting = MUST(spawn_process({ "/bin/sleep", "60" }, null_fd.get(), &cgroup));
    auto const runtime = fs::path(m_state_dir) / "runtime" / "starting";
    fs::create_directories(runtime);
    std::ofstream(runtime / "runtime.json.tmp") << "{";

    std::string const second_socket = m_state_dir + "/second.sock";
    auto const second = testing::run_process({ KVMMD_BINARY, "--state-dir", m_state_dir, "--socket", second_socket,
                                               "--kvmm", KVMM_BINARY, "--cgroup-parent", m_cgroup_parent },
                                             {}, 10s);
    std::printf("second kvmmd on a live state directory: exit %d after %lld ms\n", second.exit_status,
                static_cast<long long>(second.elapsed.count()));
    EXPECT_EQ(second.exit_status, 1) << second.standard_error;
    EXPECT_LT(second.elapsed, 2s);
    EXPECT_NE(second.standard_error.find("another kvmmd holds"), std::string::npos) << second.standard_error;
    EXPECT_FALSE(fs::exists(second_socket));

    EXPECT_EQ(::waitpid(starting.pid, nullptr, WNOHANG), 0) << "the starting VM's process was stopped";
    EXPECT_EQ(cgroup_members("starting"), std::optional(std::vector<pid_t> { starting.pid }));
    EXPECT_TRUE(fs::exists(runtime / "runtime.json.tmp")) << "the start's files were removed";
    auto const steady = info("steady");
    EXPECT_EQ(steady["state"], "running");
    EXPECT_EQ(steady["pid"], steady_pid);
    EXPECT_EQ(ctl({ "list" }).exit_status, 0) << "the live daemon stopped answering";

    (void)send_signal(starting.pidfd.get(), SIGKILL);
    ::waitpid(starting.pid, nullptr, 0);
    for (int attempt = 0; attempt < 100 && !cgroup.destroy(); ++attempt)
        std::this_thread::sleep_for(10ms);
    fs::remove(runtime / "runtime.json.tmp");
}

TEST_F(ManagerTest, DaemonThatDoesNotAnswer_KvmmctlGivesUpNamingTheSocket) {
    ASSERT_EQ(::kill(m_daemon_pid, SIGSTOP), 0);
    auto const listed = ctl({ "--daemon-timeout", "1", "list" }, 20s);
    ASSERT_EQ(::kill(m_daemon_pid, SIGCONT), 0);
    EXPECT_FALSE(listed.timed_out) << "kvmmctl waited for ever";
    EXPECT_EQ(listed.exit_status, 1);
    EXPECT_LT(listed.elapsed, 10s);
    EXPECT_NE(listed.standard_error.find(m_socket), std::string::npos) << listed.standard_error;
    EXPECT_NE(listed.standard_error.find("did not answer"), std::string::npos) << listed.standard_error;
    std::printf("kvmmctl against a stopped kvmmd (--daemon-timeout 1): exit %d after %lld ms\n", listed.exit_status,
                static_cast<long long>(listed.elapsed.count()));
    EXPECT_EQ(ctl({ "list" }).exit_status, 0);
}

TEST_F(ManagerTest, IdleAndSlowClients_DoNotLockKvmmctlOut) {
    stop_daemon(SIGTERM);
    start_daemon({}, { "--request-timeout", "1", "--idle-timeout", "2" });
    std::vector<UniqueFd> idle;
    for (int i = 0; i < 300; ++i)
        idle.push_back(MUST(connect_unix_socket(m_socket, 2s)));
    std::vector<UniqueFd> slow;
    for (int i = 0; i < 16; ++i) {
        slow.push_back(MUST(connect_unix_socket(m_socket, 2s)));
        ASSERT_TRUE(send_all(slow.back().get(), "{"));
    }
    auto const listed = ctl({ "--daemon-timeout", "5", "list" }, 20s);
    EXPECT_EQ(listed.exit_status, 0) << listed.standard_error;
    std::printf("kvmmctl list with 300 idle and 16 slow clients connected: exit %d after %lld ms\n", listed.exit_status,
                static_cast<long long>(listed.elapsed.count()));
    // Slow senders are cut at the request deadline, idle connections at the idle timeout.
    std::this_thread::sleep_for(3s);
    auto const closed = [](int fd) {
        char byte;
        return ::recv(fd, &byte, 1, MSG_DONTWAIT) == 0 ||
               (::recv(fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno != EAGAIN);
    };
    for (auto& fd : slow) {
        char buffer[4096];
        while (::recv(fd.get(), buffer, sizeof(buffer), MSG_DONTWAIT) > 0) {
        }
        EXPECT_TRUE(closed(fd.get()));
    }
    EXPECT_TRUE(closed(idle.back().get()));
}

TEST_F(ManagerTest, ProcessInTheVmsCgroup_UndefineRefuses) {
    ASSERT_EQ(ctl({ "define", write_definition("held", "idle") }).exit_status, 0);
    auto cgroup = MUST(Cgroup::create(m_cgroup_parent, "held", {}));
    UniqueFd output(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    auto sleeper = MUST(spawn_process({ "/bin/sleep", "60" }, output.get(), &cgroup));
    auto const refused = ctl({ "undefine", "held" });
    EXPECT_EQ(refused.exit_status, 1);
    EXPECT_NE(refused.standard_error.find(std::to_string(sleeper.pid)), std::string::npos) << refused.standard_error;
    MUST(send_signal(sleeper.pidfd.get(), SIGKILL));
    ASSERT_TRUE(wait_readable(sleeper.pidfd.get(), 5s));
    while (!reap_child(sleeper.pid))
        std::this_thread::sleep_for(1ms);
    auto const undefined = ctl({ "undefine", "held" });
    EXPECT_EQ(undefined.exit_status, 0) << undefined.standard_error;
    EXPECT_FALSE(cgroup_members("held")) << "the empty cgroup is removed with the VM";
}

} // namespace
} // namespace kvmm

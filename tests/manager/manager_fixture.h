// ManagerTest: the fixture of the manager's KVM-tier tests (manager_test.cc, volume_test.cc):
// a kvmmd started in a temporary state directory, driven through kvmmctl and the protocol
// client, running the project's test guest.
//
// Threading: one test thread; call() may be used from helper threads (one connection each).
#pragma once

#include "child_process.h"
#include "manager/cgroup.h"
#include "manager/crash_point.h"
#include "manager/protocol.h"

#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace kvmm {

// The tests' own conveniences, shared with the files that include this one.
using namespace std::chrono_literals;
namespace fs = std::filesystem;

class ManagerTest : public ::testing::Test {
protected:
    using json = nlohmann::json;

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

} // namespace kvmm

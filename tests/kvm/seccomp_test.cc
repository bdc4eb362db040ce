// KVM tier: kvmm's seccomp filters on a real VM. Every thread of a running kvmm is filtered
// (Seccomp 2) with no_new_privs, --no-seccomp turns that off, and a --seccomp-filter file that
// forbids one call to one thread role ends kvmm with status 159 and a line naming the thread,
// its role and the call; this goes through each role's real thread start point.
#include "child_process.h"
#include "kvmm_process.h"

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace kvmm::testing {
namespace {

using namespace std::chrono_literals;

constexpr int SECCOMP_VIOLATION_STATUS = 159;

// Sanitizer builds of kvmm run unfiltered (docs/security.md) and say so on stderr.
bool unfiltered_build(KvmmProcess const& kvmm) {
    return kvmm.log().find("sanitizer build: seccomp filters are not installed") != std::string::npos;
}

class SeccompTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto const reason = kvm_unavailable_reason();
        if (!reason.empty())
            GTEST_SKIP() << "KVM tier skipped: " << reason;
        char pattern[] = "/tmp/kvmm-seccomp-test-XXXXXX";
        m_directory = ::mkdtemp(pattern);
        m_socket = (m_directory / "api.sock").string();
    }
    void TearDown() override {
        if (!m_directory.empty())
            std::filesystem::remove_all(m_directory);
    }

    // A filter file that allows everything except `syscalls` on the threads of `role`.
    std::string filter_file_trapping(std::string const& role, std::vector<std::string> const& syscalls) {
        auto const allow_all = R"({"default_action": "allow", "filter_action": "allow", "filter": []})";
        std::string trapping = R"({"default_action": "allow", "filter_action": "trap", "filter": [)";
        for (size_t i = 0; i < syscalls.size(); ++i)
            trapping += (i ? ", " : "") + std::string(R"({"syscall": ")") + syscalls[i] + "\"}";
        trapping += "]}";
        std::string text = "{";
        for (char const* name : { "vmm", "vcpu", "api", "config_boot" })
            text +=
                std::string(text.size() > 1 ? ", " : "") + "\"" + name + "\": " + (role == name ? trapping : allow_all);
        text += "}";
        auto const path = (m_directory / ("filter-" + role + ".json")).string();
        std::ofstream(path) << text;
        return path;
    }

    void start_guest_through_the_api(unsigned vcpus) {
        ASSERT_TRUE(eventually([&] { return http(m_socket, "GET", "/").status == 200; }));
        ASSERT_EQ(http(m_socket, "PUT", "/machine-config",
                       R"({"vcpu_count": )" + std::to_string(vcpus) + R"(, "mem_size_mib": 64, "smt": false})")
                      .status,
                  204);
        ASSERT_EQ(http(m_socket, "PUT", "/boot-source",
                       R"({"kernel_image_path": ")" + test_guest() + R"(", "boot_args": "test=keyboard-wait"})")
                      .status,
                  204);
        ASSERT_EQ(http(m_socket, "PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 204);
    }

    std::filesystem::path m_directory;
    std::string m_socket;
};

TEST_F(SeccompTest, EveryThreadOfARunningKvmmIsFilteredWithNoNewPrivs) {
    KvmmProcess kvmm({ kvmm_binary(), "--api-sock", m_socket }, m_directory);
    start_guest_through_the_api(2);
    std::map<std::string, ThreadConfinement> threads;
    bool const all_filtered = eventually([&] {
        threads = thread_confinement(kvmm.pid());
        if (threads.size() != 4) // kvmm (event loop), api, vcpu0, vcpu1
            return false;
        for (auto const& [name, status] : threads) {
            if (status.seccomp != "2" || status.no_new_privs != "1")
                return false;
        }
        return true;
    });
    std::string seen;
    for (auto const& [name, status] : threads)
        seen += name + ": Seccomp " + status.seccomp + ", NoNewPrivs " + status.no_new_privs + "; ";
    if (unfiltered_build(kvmm))
        GTEST_SKIP() << "this kvmm is a sanitizer build, which installs no filters";
    EXPECT_TRUE(all_filtered) << seen << kvmm.log();
    for (char const* name : { "kvmm", "api", "vcpu0", "vcpu1" })
        EXPECT_EQ(threads.count(name), 1u) << name << " missing: " << seen;
    // The filters let the VM work: the API still answers, the guest still powers off.
    EXPECT_EQ(http(m_socket, "GET", "/").status, 200);
    EXPECT_EQ(http(m_socket, "PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})").status, 204);
    EXPECT_EQ(kvmm.wait(15s), 0) << kvmm.log();
}

TEST_F(SeccompTest, NoSeccompLeavesTheThreadsUnfilteredButKeepsNoNewPrivs) {
    KvmmProcess kvmm({ kvmm_binary(), "--api-sock", m_socket, "--no-seccomp" }, m_directory);
    start_guest_through_the_api(1);
    std::map<std::string, ThreadConfinement> threads;
    EXPECT_TRUE(eventually([&] {
        threads = thread_confinement(kvmm.pid());
        return threads.size() == 3;
    }));
    for (auto const& [name, status] : threads) {
        EXPECT_EQ(status.seccomp, "0") << name;
        EXPECT_EQ(status.no_new_privs, "1") << name;
    }
    EXPECT_EQ(http(m_socket, "PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})").status, 204);
    EXPECT_EQ(kvmm.wait(15s), 0) << kvmm.log();
}

void expect_violation(KvmmProcess& kvmm, std::string const& thread, std::string const& role) {
    int const status = kvmm.wait(15s);
    if (unfiltered_build(kvmm))
        GTEST_SKIP() << "this kvmm is a sanitizer build, which installs no filters";
    EXPECT_EQ(status, SECCOMP_VIOLATION_STATUS) << kvmm.log();
    auto const log = kvmm.log();
    EXPECT_NE(log.find("kvmm: seccomp: thread '" + thread + "' (role " + role + ") made forbidden system call"),
              std::string::npos)
        << log;
}

TEST_F(SeccompTest, AVcpuThreadsForbiddenCallEndsKvmmNamingTheVcpu) {
    KvmmProcess kvmm({ kvmm_binary(), "--kernel", test_guest(), "--cmdline", "test=hello", "--seccomp-filter",
                       filter_file_trapping("vcpu", { "ioctl" }) },
                     m_directory);
    expect_violation(kvmm, "vcpu0", "vcpu");
    if (unfiltered_build(kvmm))
        return;
    EXPECT_NE(kvmm.log().find("16 (ioctl)"), std::string::npos) << kvmm.log();
}

TEST_F(SeccompTest, TheEventLoopsForbiddenCallEndsKvmmNamingTheVmmRole) {
    KvmmProcess kvmm({ kvmm_binary(), "--kernel", test_guest(), "--cmdline", "test=keyboard-wait", "--seccomp-filter",
                       filter_file_trapping("vmm", { "epoll_wait", "epoll_pwait", "signalfd4" }) },
                     m_directory);
    expect_violation(kvmm, "kvmm", "vmm");
}

TEST_F(SeccompTest, TheApiThreadsForbiddenCallEndsKvmmNamingTheApiRole) {
    KvmmProcess kvmm({ kvmm_binary(), "--api-sock", m_socket, "--seccomp-filter",
                       filter_file_trapping("api", { "accept4", "accept" }) },
                     m_directory);
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(m_socket); })) << kvmm.log();
    // kvmm dies at the accept, possibly before the request is written: no SIGPIPE for the test.
    std::signal(SIGPIPE, SIG_IGN);
    (void)http(m_socket, "GET", "/", {}, 2s); // the API thread accepts: forbidden
    expect_violation(kvmm, "api", "api");
}

TEST_F(SeccompTest, TheConfigBootThreadsForbiddenCallEndsKvmmNamingItsRole) {
    auto const config = (m_directory / "vm.json").string();
    std::ofstream(config)
        << R"({"boot-source": {"kernel_image_path": ")" << test_guest()
        << R"(", "boot_args": "test=hello"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}})";
    KvmmProcess kvmm({ kvmm_binary(), "--config-file", config, "--no-api", "--seccomp-filter",
                       filter_file_trapping("config_boot", { "openat", "newfstatat", "statx", "futex" }) },
                     m_directory);
    expect_violation(kvmm, "config_boot", "config_boot");
}

} // namespace
} // namespace kvmm::testing

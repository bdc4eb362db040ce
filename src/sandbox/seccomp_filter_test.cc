#include "sandbox/seccomp_filter.h"

#include "sandbox/sanitized_build.h"
#include "sandbox/seccomp_table.h"
#include "sandbox/sigsys_report.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <set>
#include <string>
#include <thread>

namespace kvmm {
namespace {

// Stand-ins for KVM's request numbers (the real ones live in hypervisor/kvm): KVM_RUN is
// _IO(0xAE, 0x80).
constexpr uint64_t FAKE_KVM_RUN = 0xAE80;
constexpr uint64_t FAKE_KVM_GET_REGS = 0x8090AE81;
constexpr uint64_t FAKE_KVM_IRQ_LINE = 0x4008AE61;
constexpr uint64_t FAKE_KVM_IRQFD = 0x4020AE76;
constexpr uint64_t FAKE_KVM_GET_CLOCK = 0x8030AE7C;
constexpr uint64_t FAKE_KVM_GET_DIRTY_LOG = 0x4010AE42;

KvmIoctls fake_kvm_ioctls() {
    return { { FAKE_KVM_RUN },   { FAKE_KVM_GET_REGS },  { FAKE_KVM_IRQ_LINE },
             { FAKE_KVM_IRQFD }, { FAKE_KVM_GET_CLOCK }, { FAKE_KVM_GET_DIRTY_LOG } };
}

struct ChildResult {
    int exit_status { -1 };
    int signal { 0 };
    std::string stderr_text;
};

// Runs `body` in a forked child whose stderr is captured; the child installs the filter of
// `role` first (the test-only trigger of a thread role), then runs `body` and exits 0.
ChildResult run_filtered(ThreadRole role, std::function<void()> const& body) {
    int pipe_fds[2];
    EXPECT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    pid_t const child = ::fork();
    if (child == 0) {
        ::dup2(pipe_fds[1], STDERR_FILENO);
        prepare_sigsys_report();
        // As in kvmm, some thread started before any filter: glibc installs its own signal
        // handlers on the first pthread_create.
        std::thread([] {}).join();
        auto filters = SeccompFilters::from_table(fake_kvm_ioctls());
        if (!filters)
            ::_exit(90);
        if (!filters->install(role, "test-thread"))
            ::_exit(91);
        body();
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    ChildResult result;
    char buffer[512];
    ssize_t count;
    while ((count = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0)
        result.stderr_text.append(buffer, static_cast<size_t>(count));
    ::close(pipe_fds[0]);
    int status = 0;
    EXPECT_EQ(::waitpid(child, &status, 0), child);
    if (WIFEXITED(status))
        result.exit_status = WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        result.signal = WTERMSIG(status);
    return result;
}

void expect_violation(ChildResult const& result, ThreadRole role, std::string const& syscall) {
    EXPECT_EQ(result.exit_status, SECCOMP_VIOLATION_EXIT_STATUS) << result.stderr_text;
    EXPECT_NE(result.stderr_text.find("thread 'test-thread' (role " + std::string(thread_role_name(role)) + ")"),
              std::string::npos)
        << result.stderr_text;
    EXPECT_NE(result.stderr_text.find("(" + syscall + ")"), std::string::npos) << result.stderr_text;
}

// The tests below install real filters in a forked child.
class EveryRole : public testing::TestWithParam<ThreadRole> {
protected:
    void SetUp() override {
        if (SANITIZED_BUILD)
            GTEST_SKIP() << SANITIZED_BUILD_SKIP_REASON;
    }
};

class InstallsAFilter : public testing::Test {
protected:
    void SetUp() override {
        if (SANITIZED_BUILD)
            GTEST_SKIP() << SANITIZED_BUILD_SKIP_REASON;
    }
};
class VcpuRole : public InstallsAFilter {};
class VmmRole : public InstallsAFilter {};
class ApiRole : public InstallsAFilter {};
class ConfigBootRole : public InstallsAFilter {};

TEST_P(EveryRole, AnInetSocketKillsTheProcessNamingTheRoleAndSyscall) {
    auto const result = run_filtered(GetParam(), [] { (void)::socket(AF_INET, SOCK_STREAM, 0); });
    expect_violation(result, GetParam(), "socket");
}

TEST_P(EveryRole, ExecutableMemoryIsForbidden) {
    auto const result = run_filtered(GetParam(), [] {
        (void)::mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    });
    expect_violation(result, GetParam(), "mmap");
}

TEST_P(EveryRole, ExecveIsForbidden) {
    auto const result = run_filtered(GetParam(), [] {
        char const* argv[] = { "/bin/true", nullptr };
        ::execve("/bin/true", const_cast<char* const*>(argv), nullptr);
    });
    expect_violation(result, GetParam(), "execve");
}

TEST_P(EveryRole, PtraceIsForbidden) {
    auto const result = run_filtered(GetParam(), [] { (void)::syscall(SYS_ptrace, 0, 0, 0, 0); });
    expect_violation(result, GetParam(), "ptrace");
}

TEST_P(EveryRole, AnUnknownIoctlIsForbidden) {
    auto const result = run_filtered(GetParam(), [] { (void)::ioctl(STDERR_FILENO, 0xDEADu, 0); });
    expect_violation(result, GetParam(), "ioctl");
}

TEST_P(EveryRole, MemoryThreadsLocksAndLoggingStillWork) {
    auto const result = run_filtered(GetParam(), [] {
        void* memory = ::mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED || ::mprotect(memory, 4096, PROT_READ) != 0 || ::munmap(memory, 1 << 20) != 0)
            ::_exit(3);
        std::string big(10 << 20, 'x'); // malloc through mmap
        if (::write(STDERR_FILENO, "ok\n", 3) != 3)
            ::_exit(4);
        (void)::getpid();
    });
    EXPECT_EQ(result.exit_status, 0) << result.stderr_text;
    EXPECT_EQ(result.stderr_text, "ok\n");
}

INSTANTIATE_TEST_SUITE_P(Roles, EveryRole, testing::ValuesIn(ALL_THREAD_ROLES),
                         [](auto const& role_info) { return std::string(thread_role_name(role_info.param)); });

TEST_F(VcpuRole, KvmRunIsAllowedButOpeningAFileIsNot) {
    // KVM_RUN on a descriptor that is not a vCPU: the filter lets it through, the kernel says ENOTTY.
    auto const allowed = run_filtered(ThreadRole::Vcpu, [] {
        if (::ioctl(STDERR_FILENO, FAKE_KVM_RUN, 0) == 0 || errno != ENOTTY)
            ::_exit(5);
    });
    EXPECT_EQ(allowed.exit_status, 0) << allowed.stderr_text;
    auto const opened = run_filtered(ThreadRole::Vcpu, [] { (void)::open("/dev/null", O_RDONLY); });
    expect_violation(opened, ThreadRole::Vcpu, "openat");
}

TEST_F(VcpuRole, TheSaveStateIoctlsAreTheEventLoopsOnly) {
    auto const vcpu = run_filtered(ThreadRole::Vcpu, [] { (void)::ioctl(STDERR_FILENO, FAKE_KVM_GET_CLOCK, 0); });
    expect_violation(vcpu, ThreadRole::Vcpu, "ioctl");
    auto const vmm = run_filtered(ThreadRole::Vmm, [] { (void)::ioctl(STDERR_FILENO, FAKE_KVM_GET_CLOCK, 0); });
    EXPECT_EQ(vmm.exit_status, 0) << vmm.stderr_text;
}

TEST_F(VmmRole, ThreadsMayStartButNotProcesses) {
    auto const thread = run_filtered(ThreadRole::Vmm, [] {
        std::thread worker([] {});
        worker.join();
    });
    EXPECT_EQ(thread.exit_status, 0) << thread.stderr_text << " signal " << thread.signal;
    auto const process = run_filtered(ThreadRole::Vmm, [] { (void)::fork(); });
    expect_violation(process, ThreadRole::Vmm, "clone");
}

TEST_F(ApiRole, UnixSocketsAndFilesAreAllowedButNotTheVcpusIoctls) {
    auto const allowed = run_filtered(ThreadRole::Api, [] {
        int const fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int const file = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || file < 0)
            ::_exit(6);
    });
    EXPECT_EQ(allowed.exit_status, 0) << allowed.stderr_text;
    auto const run = run_filtered(ThreadRole::Api, [] { (void)::ioctl(STDERR_FILENO, FAKE_KVM_RUN, 0); });
    expect_violation(run, ThreadRole::Api, "ioctl");
}

TEST_F(ConfigBootRole, TheApiServersEventLoopCallsAreNotAllowed) {
    auto const result = run_filtered(ThreadRole::ConfigBoot, [] { (void)::syscall(SYS_accept4, -1, 0, 0, 0); });
    expect_violation(result, ThreadRole::ConfigBoot, "accept4");
}

TEST(SeccompTable, EveryRowNamesAKnownSyscallARoleAndTheCodeThatNeedsIt) {
    for (auto const& row : seccomp_table()) {
        EXPECT_NE(row.roles & ROLE_ALL, 0u) << row.syscall;
        EXPECT_GT(std::string(row.needed_by).size(), 10u) << row.syscall;
    }
    for (ThreadRole role : ALL_THREAD_ROLES) {
        auto const filter = build_role_filter(role, fake_kvm_ioctls());
        ASSERT_TRUE(filter) << filter.error().message();
        EXPECT_FALSE(filter->rules.empty());
    }
}

TEST(SeccompTable, CompiledProgramsFitTheKernelLimit) {
    auto const filters = SeccompFilters::from_table(fake_kvm_ioctls());
    ASSERT_TRUE(filters) << filters.error().message();
    for (ThreadRole role : ALL_THREAD_ROLES) {
        EXPECT_GT(filters->instruction_count(role), 10u);
        EXPECT_LT(filters->instruction_count(role), 4096u);
    }
}

} // namespace
} // namespace kvmm

#include "sandbox/seccomp_filter_file.h"

#include "sandbox/sanitized_build.h"
#include "sandbox/seccomp_filter.h"
#include "sandbox/sigsys_report.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

namespace kvmm {
namespace {

std::string role(char const* default_action, char const* rules) {
    return std::string("{\"default_action\": ") + default_action + ", \"filter_action\": \"allow\", \"filter\": [" +
           rules + "]}";
}

std::string file_with(std::string const& vmm, std::string const& vcpu, std::string const& api) {
    return "{\"vmm\": " + vmm + ", \"vcpu\": " + vcpu + ", \"api\": " + api + "}";
}

TEST(SeccompFilterFile, AFirecrackerStyleFileParsesAndConfigBootTakesTheApiFilter) {
    auto const basic = role("\"trap\"", R"({"syscall": "read"}, {"syscall": "write", "comment": "logs"})");
    auto const vcpu = role("\"kill_process\"", R"({"syscall": "ioctl", "args": [
        {"index": 1, "type": "dword", "op": "eq", "val": 44672, "comment": "KVM_RUN"}]},
        {"syscall": "mmap", "args": [{"index": 2, "type": "dword", "op": {"masked_eq": 4}, "val": 0}]})");
    auto const api = role("{\"errno\": 1}", R"({"syscall": "accept4"})");
    auto const filters = parse_seccomp_filter_file(file_with(basic, vcpu, api));
    ASSERT_TRUE(filters) << filters.error().message();
    auto const& parsed_vcpu = (*filters)[static_cast<size_t>(ThreadRole::Vcpu)];
    EXPECT_EQ(parsed_vcpu.default_action.kind, SeccompAction::Kind::KillProcess);
    ASSERT_EQ(parsed_vcpu.rules.size(), 2u);
    EXPECT_EQ(parsed_vcpu.rules[0].checks[0].value, 44672u);
    EXPECT_TRUE(parsed_vcpu.rules[0].checks[0].low_32_bits);
    EXPECT_EQ(parsed_vcpu.rules[1].checks[0].operation, SeccompArgumentCheck::Operation::MaskedEqual);
    EXPECT_EQ(parsed_vcpu.rules[1].checks[0].mask, 4u);
    auto const& boot = (*filters)[static_cast<size_t>(ThreadRole::ConfigBoot)];
    EXPECT_EQ(boot.default_action.kind, SeccompAction::Kind::Errno);
    EXPECT_EQ(boot.default_action.errno_value, 1);
    EXPECT_EQ(boot.rules.size(), 1u);
    EXPECT_TRUE(SeccompFilters::compile(*filters));
}

TEST(SeccompFilterFile, BadFilesAreRefusedNamingWhereTheProblemIs) {
    auto const ok = role("\"trap\"", R"({"syscall": "read"})");
    struct Case {
        std::string text;
        std::string message;
    };
    Case const cases[] = {
        { "{not json", "not valid JSON" },
        { "[]", "expected a JSON object" },
        { "{\"vmm\": " + ok + ", \"api\": " + ok + "}", "thread role 'vcpu' is missing" },
        { file_with(ok, ok, ok).insert(1, "\"gpu\": {}, "), "unknown thread role 'gpu'" },
        { file_with(role("\"trap\"", R"({"syscall": "no_such_call"})"), ok, ok),
          "vmm.filter[0]: unknown system call 'no_such_call'" },
        { file_with(ok, role("\"explode\"", ""), ok), "vcpu.default_action: unknown action 'explode'" },
        { file_with(ok, ok,
                    role("\"trap\"",
                         R"({"syscall": "ioctl", "args": [{"index": 7, "type": "dword", "op": "eq", "val": 1}]})")),
          "api.filter[0].args[0]: \"index\" must be an argument number from 0 to 5" },
        { file_with(ok, ok,
                    role("\"trap\"",
                         R"({"syscall": "ioctl", "args": [{"index": 1, "type": "word", "op": "eq", "val": 1}]})")),
          "\"type\" must be \"dword\" or \"qword\"" },
        { file_with(ok, ok,
                    role("\"trap\"",
                         R"({"syscall": "ioctl", "args": [{"index": 1, "type": "dword", "op": "like", "val": 1}]})")),
          "unknown \"op\" \"like\"" },
        { file_with(
              ok, ok,
              role("\"trap\"",
                   R"({"syscall": "ioctl", "args": [{"index": 1, "type": "dword", "op": "eq", "val": 4294967296}]})")),
          "does not fit a dword" },
        { file_with(ok, ok, role("\"trap\"", R"({"syscall": "read", "action": "allow"})")),
          "api.filter[0]: unknown key 'action'" },
    };
    for (auto const& [text, message] : cases) {
        auto const parsed = parse_seccomp_filter_file(text);
        ASSERT_FALSE(parsed) << text;
        EXPECT_NE(parsed.error().message().find(message), std::string::npos)
            << "got: " << parsed.error().message() << "\nwanted: " << message;
    }
}

TEST(SeccompFilterFile, AnInstalledFileFilterAllowsItsCallsAndTrapsTheRest) {
    if (SANITIZED_BUILD)
        GTEST_SKIP() << SANITIZED_BUILD_SKIP_REASON;
    // The smallest filter a process can live with, plus getppid; getpid is left out.
    auto const vmm = role("\"trap\"", R"({"syscall": "write"}, {"syscall": "exit_group"}, {"syscall": "getppid"})");
    auto const filters = parse_seccomp_filter_file(file_with(vmm, vmm, vmm));
    ASSERT_TRUE(filters) << filters.error().message();
    auto const compiled = SeccompFilters::compile(*filters);
    ASSERT_TRUE(compiled) << compiled.error().message();
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    pid_t const child = ::fork();
    if (child == 0) {
        ::dup2(pipe_fds[1], STDERR_FILENO);
        prepare_sigsys_report();
        if (!compiled->install(ThreadRole::Vmm, "file-test"))
            ::_exit(91);
        (void)::syscall(SYS_getppid);
        (void)::syscall(SYS_getpid);
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    std::string text;
    char buffer[256];
    ssize_t count;
    while ((count = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0)
        text.append(buffer, static_cast<size_t>(count));
    ::close(pipe_fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), SECCOMP_VIOLATION_EXIT_STATUS) << text;
    EXPECT_NE(text.find("(role vmm) made forbidden system call 39 (getpid)"), std::string::npos) << text;
}

} // namespace
} // namespace kvmm

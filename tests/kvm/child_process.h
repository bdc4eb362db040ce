// ChildProcess: runs a program with piped stdin/stdout/stderr and a hard time
// limit, for tests that drive the kvmm binary from outside. A child that
// outlives its limit is killed (by its own pid) and reported as timed out.
#pragma once

#include <chrono>
#include <string>
#include <sys/types.h>
#include <vector>

namespace kvmm::testing {

struct ProcessResult {
    int exit_status { -1 }; // valid when exited normally
    int signal { 0 };       // non-zero when killed by a signal
    bool timed_out { false };
    std::string standard_output;
    std::string standard_error;
    std::chrono::milliseconds elapsed { 0 };
};

ProcessResult run_process(std::vector<std::string> const& arguments, std::string const& input = {},
                          std::chrono::milliseconds limit = std::chrono::seconds(20));

// Starts `arguments` (argv[0] a path) with the given fds as its stdin, stdout and stderr; returns
// its pid, or -1. The caller keeps (and closes) its own copies of the fds.
pid_t spawn_process(std::vector<std::string> const& arguments, int input, int output, int error);

// Path of the kvmm binary and the test guest, fixed at build time.
std::string kvmm_binary();
std::string test_guest();

// Empty when /dev/kvm can be opened read-write; otherwise why not (tests then skip).
std::string kvm_unavailable_reason();

} // namespace kvmm::testing

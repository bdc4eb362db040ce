// What happens when a thread makes a system call its seccomp filter forbids: the filter
// answers SECCOMP_RET_TRAP, the kernel sends SIGSYS to that thread, and the handler writes one
// line to stderr naming the thread, its role and the system call (number and name), then ends
// the process with SECCOMP_VIOLATION_EXIT_STATUS. The handler is async-signal-safe: it formats
// into a stack buffer from data prepared beforehand and calls only write(2) and _exit(2),
// which every role's filter allows.
//
// Threading: prepare_sigsys_report() once, on the main thread, before any filter is installed;
// set_thread_role_for_report() on each thread for itself.
#pragma once

#include "sandbox/thread_role.h"

#include <string_view>

namespace kvmm {

// 128 + SIGSYS: what a shell would show for a process SIGSYS killed; kvmm's own statuses are
// 0, 1, 2 and 128 + SIGINT/SIGTERM/SIGHUP (docs/security.md).
inline constexpr int SECCOMP_VIOLATION_EXIT_STATUS = 159;

// Installs the SIGSYS handler and the syscall name table; loads the time zone so that a later
// first log line does not open /etc/localtime on a filtered thread.
void prepare_sigsys_report();

// Records the calling thread's name and role for the handler.
void set_thread_role_for_report(ThreadRole role, std::string_view thread_name);

} // namespace kvmm

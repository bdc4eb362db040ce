// SeccompFilters: the BPF program of every thread role, compiled once at start (libseccomp)
// from the table (seccomp_table.h) or a --seccomp-filter file, and installed by each thread
// itself before it touches guest or client input (install()).
//
// A filter is per thread and inherited by the threads it creates; filters stack, and the
// strictest answer wins. So a thread installs its own role's filter, and the event loop's
// filter includes what the vCPU threads it may still start need (seccomp_table.cc).
//
// Threading: compile() on the main thread before any filtered thread starts; install() from
// any thread, concurrently (the programs are read only).
#pragma once

#include "base/expected.h"
#include "sandbox/seccomp_filter_spec.h"
#include "sandbox/seccomp_table.h"
#include "sandbox/thread_role.h"

#include <linux/filter.h>

#include <array>
#include <span>
#include <string_view>
#include <vector>

namespace kvmm {

class SeccompFilters {
public:
    // Compiles the filter of each role in `roles` (indexed by ThreadRole; each costs about a
    // hundred microseconds, so a process compiles only the roles it will have). Fails naming
    // the role and the rule libseccomp refused.
    static Expected<SeccompFilters> compile(std::array<SeccompRoleFilter, ALL_THREAD_ROLES.size()> const& filters,
                                            std::span<ThreadRole const> roles = ALL_THREAD_ROLES);
    // The filters of kvmm's own table (the default).
    static Expected<SeccompFilters> from_table(KvmIoctls const& kvm,
                                               std::span<ThreadRole const> roles = ALL_THREAD_ROLES);

    // Sets no_new_privs on the calling thread and installs `role`'s filter on it; from then on
    // a forbidden call is reported naming `thread_name` and the role (sigsys_report.h). Fails
    // for a role that was not compiled.
    Expected<void> install(ThreadRole role, std::string_view thread_name) const;

    // The BPF instructions of a role (tests, and the start-up cost log line).
    size_t instruction_count(ThreadRole role) const { return m_programs[static_cast<size_t>(role)].size(); }

private:
    std::array<std::vector<sock_filter>, ALL_THREAD_ROLES.size()> m_programs;
};

// Sets no_new_privs on the calling thread (and so on the threads it creates): execve can no
// longer grant privileges, and an unprivileged thread may install filters.
Expected<void> set_no_new_privileges();

// Compiles one role's filter into BPF (exposed for the filter file's checks and tests).
Expected<std::vector<sock_filter>> compile_role_filter(SeccompRoleFilter const& filter, std::string_view role_name);

} // namespace kvmm

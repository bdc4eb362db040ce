// run_jail(): kvmm-jailer's whole operation, in the order of Firecracker's jailer
// (docs/jailer.md, "Jailer Operation"), with its differences listed in docs/jailer.md:
//
//   1. checks (nothing created yet): the chroot base, the exec file and the libraries it needs,
//      the device numbers, the network namespace handle, the cgroup hierarchies;
//   2. <base>/<exec name>/<id>/root with the exec file, its loader and libraries (hard links
//      where they are root's and on the same file system, else root-owned read-only copies)
//      and dev/{kvm,net/tun,urandom,userfaultfd} owned by uid:gid, mode 0600; the
//      jail root itself is given to uid:gid so kvmm can create its sockets there;
//   3. the cgroups and their settings, the resource limits, the network namespace;
//   4. a new mount namespace, pivot_root(2) into the jail root, the old root detached;
//   5. --daemonize (setsid, stdio on /dev/null) and --new-pid-ns (the parent writes the
//      child's pid to /<exec name>.pid in the jail and exits; the child goes on as pid 1);
//   6. joining the cgroups, no_new_privs, Landlock, the privilege drop, and exec of
//      /<exec name> --id=<id> --start-time-us=.. --start-time-cpu-us=.. [--parent-cpu-time-us=..]
//      followed by the arguments after `--`, with an empty environment.
//
// Every failure before the exec removes what the run created (files, directories, cgroups,
// the jail root's changed owner) and returns the error. Returns only on failure.
//
// Threading: the process must be single-threaded (unshare(CLONE_NEWNS), setns and the
// credential changes apply to the calling thread).
#pragma once

#include "base/expected.h"
#include "jailer/jailer_options.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvmm::jailer {

// The times Firecracker's jailer hands to the VMM (microseconds): the monotonic clock when the
// jailer started and the CPU time the jailer used.
struct StartTimes {
    uint64_t monotonic_us { 0 };
    uint64_t cpu_us { 0 };
};
StartTimes current_times();

// The argument vector of the exec: argv[0] is the exec name.
std::vector<std::string> exec_arguments(JailerOptions const& options, StartTimes const& start, uint64_t cpu_time_us,
                                        std::optional<uint64_t> parent_cpu_time_us);

// Closes every descriptor above 2 (Firecracker closes all but stdin, stdout and stderr).
Expected<void> close_inherited_descriptors();

Error run_jail(JailerOptions const& options, StartTimes const& start);

} // namespace kvmm::jailer

// Supervision primitives of kvmmd: starting a kvmm process inside its cgroup, watching it
// through a pidfd (pidfd_open(2), which also works for a process that is not our child, e.g.
// one re-attached after a daemon restart), stopping it, and the restart rate limit.
//
// spawn_process() forks, and the child waits on a pipe until the parent has moved it into the
// cgroup; only then does it exec, so no thread of kvmm (no vCPU) ever runs outside its
// cgroup. Between fork and exec the child calls only async-signal-safe functions (the daemon
// is multi-threaded). Right after the fork the child closes every descriptor it inherited
// except its end of the go-ahead pipe, its exec-error pipe and its standard descriptors, so it
// never holds the daemon's listening socket or anyone's pipe ends; end-of-file on the go-ahead
// pipe (the parent gave up, or died) makes it exit without exec. The child gets its own session (a terminal's signals
// never reach it), an empty signal mask, stdin from /dev/null and stdout/stderr on `output_fd`; it does not die with
// the daemon, so a daemon restart can re-attach to it.
//
// Threading: free functions without shared state; RestartLimiter is not locked.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"
#include "manager/cgroup.h"

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace kvmm {

struct SpawnedProcess {
    pid_t pid { 0 };
    UniqueFd pidfd;
};

// Starts argv[0] (an absolute path) with `argv`. `cgroup` may be null (no cgroup). An exec
// failure (missing binary...) is reported as an error naming the path, after reaping the child.
Expected<SpawnedProcess> spawn_process(std::vector<std::string> const& argv, int output_fd, Cgroup* cgroup);

// pidfd_open(2): a descriptor that becomes readable when `pid` exits.
Expected<UniqueFd> open_pidfd(pid_t pid);
// pidfd_send_signal(2): signals exactly the process the pidfd refers to, never a reused pid.
Expected<void> send_signal(int pidfd, int signal_number);
// Waits until `fd` is readable or `timeout` passes; true if readable.
bool wait_readable(int fd, std::chrono::milliseconds timeout);

struct ExitStatus {
    int code { 0 };   // the exit status when signal == 0
    int signal { 0 }; // the terminating signal, 0 if it exited

    bool success() const { return signal == 0 && code == 0; }
    // "exited with status 2", "killed by signal 9 (Killed)"
    std::string describe() const;
};

// waitpid(pid, WNOHANG) on our child: its status once it has exited, nullopt while it runs or
// if it is not our child (ECHILD).
std::optional<ExitStatus> reap_child(pid_t pid);

// Allows at most `max_restarts` within any `window`; the restart policy's brake against a VM
// that crashes at once, every time.
class RestartLimiter {
public:
    using Clock = std::chrono::steady_clock;

    explicit RestartLimiter(size_t max_restarts = 5, std::chrono::seconds window = std::chrono::seconds(60))
        : m_max_restarts(max_restarts), m_window(window) {}

    // Records a restart at `now` and returns true, or returns false if the limit is reached.
    bool allow(Clock::time_point now);

private:
    size_t m_max_restarts;
    std::chrono::seconds m_window;
    std::deque<Clock::time_point> m_restarts;
};

} // namespace kvmm

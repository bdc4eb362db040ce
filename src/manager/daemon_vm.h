// Daemon::Vm: what kvmmd knows about one defined VM and, while it runs, its kvmm process.
// Private to the daemon's sources (daemon.cc, daemon_process.cc).
//
// Threading: `operation` serialises the verbs on this VM; every other field is guarded by
// the daemon's m_lock.
#pragma once

#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "manager/cgroup.h"
#include "manager/daemon.h"
#include "manager/log_file.h"
#include "manager/supervisor.h"
#include "manager/vm_definition.h"

#include <mutex>
#include <optional>
#include <string>

namespace kvmm {

inline constexpr char const* STATE_SHUT_OFF = "shut off";
inline constexpr char const* STATE_RUNNING = "running";
inline constexpr char const* STATE_PAUSED = "paused";
inline constexpr char const* STATE_CRASHED = "crashed";
// kvmmctl save: the process is gone and the next start restores the VM from its saved files.
inline constexpr char const* STATE_SAVED = "saved";

struct Daemon::Vm {
    Vm(VmDefinition definition_, size_t max_restarts, std::chrono::seconds window)
        : name(definition_.name), definition(std::move(definition_)), restarts(max_restarts, window) {}

    bool active() const { return state == STATE_RUNNING || state == STATE_PAUSED; }
    // What the VM is once its process has gone without crashing.
    char const* stopped_state() const { return saved ? STATE_SAVED : STATE_SHUT_OFF; }

    std::string const name;
    Mutex operation; // serialises start/stop/undefine of this VM; guards no field by itself

    // Everything below is guarded by the daemon's m_lock, which lives in another object, so
    // GUARDED_BY cannot name it here.
    VmDefinition definition;
    std::string state { STATE_SHUT_OFF };
    pid_t pid { 0 };               // the running kvmm, 0 when none
    bool is_child { false };       // false for a process re-attached after a daemon restart
    bool starting { false };       // start() has not seen the control socket yet
    bool stop_requested { false }; // shutdown/destroy: the exit is "shut off", no restart
    bool removed { false };        // undefined while a helper still held it
    UniqueFd pidfd;
    UniqueFd console; // kvmmd's connection to kvmm's console socket
    // Set when kvmmd re-attaches to a running kvmm: the end of the console log, to find where
    // kvmm's replayed history goes beyond what the log holds (already_logged()).
    std::optional<std::string> console_resume_tail;
    std::optional<Cgroup> cgroup;
    std::string control_socket;
    std::string console_socket;
    std::string metrics_path;
    std::string stderr_path;
    // Set by save (and found in the state directory at daemon start) until a start restores it.
    std::optional<SavedRecord> saved;
    std::optional<ExitStatus> last_exit_status;
    std::string last_exit_reason;
    std::optional<RotatingLog> log;
    Scrollback scrollback;
    RestartLimiter restarts;
    uint64_t restart_count { 0 };
};

} // namespace kvmm

// Daemon: the kvmm processes - start, stop, re-attach, and the monitor thread that sees them
// exit and pumps their consoles.
#include "manager/crash_point.h"
#include "manager/daemon_vm.h"
#include "manager/kvmm_client.h"
#include "manager/protocol.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kvmm {

namespace {

// How much of the console log's end identifies where it stopped (already_logged()).
constexpr size_t CONSOLE_RESUME_TAIL_BYTES = 512;

// kvmm logs "VM stopped: <cause> (<detail>)" at info level for a clean stop, or
// "VM stopped: <cause>: <detail>" at error level when the guest or kvmm failed (kvmm_main.cc).
// For a process that is not our child this line is the only exit report there is.
struct LoggedExit {
    bool crashed { true };
    std::string reason;
};

// kvmm's log is one run's messages; its last megabyte holds the stop line.
constexpr size_t MAX_KVMM_LOG_SCAN = 1024 * 1024;

LoggedExit exit_from_log(std::string const& path) {
    // The end of kvmm's log, never through a planted link (O_NOFOLLOW in read_file_tail).
    std::istringstream file(read_file_tail(path, MAX_KVMM_LOG_SCAN));
    std::string line, last_stop, last_error;
    while (std::getline(file, line)) {
        if (line.find("VM stopped:") != std::string::npos)
            last_stop = line;
        else if (line.find("[error]") != std::string::npos || line.starts_with("kvmm: error:"))
            last_error = line;
    }
    if (!last_stop.empty()) {
        bool const error = last_stop.find("[error]") != std::string::npos;
        return { error, last_stop.substr(last_stop.find("VM stopped:")) };
    }
    if (!last_error.empty())
        return { true, last_error };
    return { true, "kvmm ended without reporting why (killed, e.g. by SIGKILL)" };
}

// The last error line kvmm wrote, to explain a non-zero exit.
std::string last_error_line(std::string const& path) {
    auto logged = exit_from_log(path);
    return logged.crashed ? logged.reason : std::string {};
}

// Gives a jailed VM's console socket to root and `group`, mode 0660. The jail root belongs to
// the VM's uid, so whatever is at the path may have been planted by the jailed process (a
// symlink to a host file, say): the path is opened without following a symlink and changed
// only if it is a socket, through that descriptor.
Expected<void> share_console_socket(std::string const& path, gid_t group) {
    UniqueFd fd(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot open '{}'", path));
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("fstat '{}'", path));
    if (!S_ISSOCK(status.st_mode))
        return Error::format("'{}' is not a socket (mode {:o}); left as it is", path, status.st_mode);
    if (::fchownat(fd.get(), "", 0, group, AT_EMPTY_PATH) != 0)
        return Error::from_errno(fmt::format("cannot give '{}' to group {}", path, group));
    // fchmod() does not take an O_PATH descriptor; its /proc/self/fd link names this inode.
    if (::chmod(fmt::format("/proc/self/fd/{}", fd.get()).c_str(), 0660) != 0)
        return Error::from_errno(fmt::format("cannot make '{}' mode 0660", path));
    return {};
}

CgroupLimits limits_of(VmDefinition const& definition) {
    CgroupLimits limits;
    limits.cpu_weight = definition.cpu_weight;
    limits.cpu_quota_percent = definition.cpu_quota_percent;
    if (definition.memory_limit_mib)
        limits.memory_limit_bytes = *definition.memory_limit_mib << 20;
    return limits;
}

} // namespace

void Daemon::watch(Vm& vm, int fd, bool is_console) {
    // Called with m_lock held.
    uint64_t const token = m_next_token++;
    epoll_event event {};
    event.events = EPOLLIN;
    event.data.u64 = token;
    if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
        spdlog::error("VM '{}': cannot watch fd {}: {}", vm.name, fd, std::strerror(errno));
        return;
    }
    m_watches[token] = Watch { m_vms.count(vm.name) ? m_vms[vm.name] : std::shared_ptr<Vm> {}, is_console };
}

Expected<void> Daemon::start(Vm& vm) {
    VmDefinition definition;
    std::optional<SavedRecord> saved;
    {
        MutexLock guard(m_lock);
        if (vm.removed)
            return Error::format("VM '{}' is not defined", vm.name);
        if (vm.active())
            return Error::format("VM '{}' is already {}", vm.name, vm.state);
        definition = vm.definition;
        saved = vm.saved;
        vm.starting = true;
        vm.stop_requested = false;
    }
    struct ClearStarting {
        Daemon& daemon;
        Vm& vm;
        ~ClearStarting() {
            MutexLock guard(daemon.m_lock);
            vm.starting = false;
        }
    } clear_starting { *this, vm };
    // After `starting` is set, so a volume verb that checks afterwards sees this VM as active.
    TRY(check_writable_disks_are_not_backing(definition));
    // Again at start: a path that was a file at define may be a block device now.
    TRY(check_host_block_devices(definition).with_context(fmt::format("VM '{}'", vm.name)));

    auto const runtime = m_store.runtime_dir(vm.name);
    std::string control_socket = (runtime / "control.sock").string();
    std::string console_socket = (runtime / "console.sock").string();
    std::string metrics_path = (runtime / "metrics.json").string();
    std::string const machine_file = (runtime / "machine.json").string();
    std::string const stderr_path = (m_store.root() / "logs" / (vm.name + ".kvmm.log")).string();

    // The start is a transaction: the intent is on disk before anything exists that a crash
    // could leave behind (cgroup, process), and it is removed only once runtime.json records
    // the process, or once this function has undone what it did. A daemon that dies in between
    // leaves the intent, and the next daemon resolves it from the VM's cgroup (recover()).
    TRY(m_store.write_start_intent(vm.name, ::getpid()));
    crash_point("start:intent");
    struct Journal {
        Daemon& daemon;
        std::string const& name;
        bool committed { false };
        ~Journal() {
            if (!committed)
                (void)daemon.m_store.clear_start_intent(name);
        }
    } journal { *this, vm.name };

    if (!m_options.jail) {
        // Relative to the state directory's fds, never through a planted link (state_store.h).
        TRY(m_store.write_runtime_file(vm.name, "metrics.json", ""));
        // The typed definition reaches kvmm as a machine file; kvmm parses no device strings.
        TRY(m_store.write_runtime_file(vm.name, "machine.json", kvmm_machine_file(definition)));
    }
    UniqueFd output = TRY(m_store.open_kvmm_log(vm.name));

    // Cgroup::create reuses a directory left over from a run whose cgroup could not be removed.
    auto created = Cgroup::create(m_options.cgroup_parent, vm.name, limits_of(definition));
    if (!created)
        return created.error().with_context(fmt::format("VM '{}': cgroup", vm.name));
    Cgroup cgroup = std::move(*created);
    // One kvmm per VM: a process still in the VM's cgroup is a kvmm that nobody tracks.
    auto const members = cgroup.processes();
    if (!members || !members->empty())
        return members ? Error::format("VM '{}': its cgroup still holds process(es) {}; not starting a second kvmm",
                                       vm.name, fmt::join(*members, ", "))
                       : members.error().with_context(fmt::format("VM '{}': cgroup", vm.name));
    crash_point("start:cgroup");

    std::vector<std::string> arguments;
    if (m_options.jail) {
        // kvmm-jailer runs in the VM's cgroup already (spawn_process puts it there before its
        // exec), so it gets no --cgroup/--parent-cgroup and kvmm stays where kvmmd put it.
        auto const& jail = *m_options.jail;
        Expected<uint32_t> assigned = Error("not assigned");
        {
            // Two starts must not both take the same free uid.
            MutexLock guard(m_uid_lock);
            assigned = assign_vm_uid(m_store.root() / "uids", vm.name, jail.uid_start, jail.uid_count);
        }
        if (!assigned) {
            (void)cgroup.destroy();
            return assigned.error().with_context(fmt::format("VM '{}': uid", vm.name));
        }
        uint32_t const uid = *assigned;
        // info-level logging records "VM stopped: ..." for every exit (see below).
        // A saved VM's files are handed into the jail, where kvmm restores from them.
        auto prepared = prepare_jail(jail, m_options.kvmm_binary, definition, uid, { "--log-level", "info" }, saved);
        if (!prepared) {
            (void)cgroup.destroy();
            return prepared.error().with_context(fmt::format("VM '{}': jail", vm.name));
        }
        arguments = std::move(prepared->argv);
        control_socket = prepared->control_socket;
        console_socket = prepared->console_socket;
        metrics_path = prepared->metrics_path;
    } else {
        arguments = kvmm_arguments(definition, m_options.kvmm_binary, machine_file, control_socket, console_socket);
        // kvmm_arguments() names the instance (--id); info-level logging records "VM stopped: ..."
        // for every exit, which is how an exit is explained when kvmm is not our child.
        for (char const* extra : { "--log-level", "info", "--metrics", metrics_path.c_str() })
            arguments.emplace_back(extra);
    }
    // A saved VM comes back from its snapshot instead of booting (a jailed one: prepare_jail).
    if (saved && !m_options.jail) {
        for (auto const* extra :
             { "--restore-snapshot", saved->snapshot_path.c_str(), "--restore-memory", saved->memory_path.c_str() })
            arguments.emplace_back(extra);
    }
    auto spawned = spawn_process(arguments, output.get(), &cgroup);
    if (!spawned) {
        (void)cgroup.destroy();
        release_jail(vm.name);
        return spawned.error();
    }
    crash_point("start:spawned");
    pid_t const pid = spawned->pid;
    RuntimeRecord record { pid, process_start_time(pid).value_or(0), control_socket, console_socket, STATE_RUNNING };
    if (auto written = m_store.write_runtime_record(vm.name, record); !written) {
        // Without the record a restarted daemon could not adopt this process: undo the start.
        (void)send_signal(spawned->pidfd.get(), SIGKILL);
        (void)wait_readable(spawned->pidfd.get(), std::chrono::seconds(10));
        (void)reap_child(pid);
        (void)cgroup.destroy();
        release_jail(vm.name);
        return written.error().with_context(fmt::format("VM '{}'", vm.name));
    }
    crash_point("start:recorded");
    if (auto cleared = m_store.clear_start_intent(vm.name); !cleared)
        spdlog::warn("VM '{}': {}", vm.name, cleared.error().message());
    journal.committed = true;
    crash_point("start:committed");
    {
        MutexLock guard(m_lock);
        vm.pid = pid;
        vm.is_child = true;
        vm.pidfd = std::move(spawned->pidfd);
        vm.cgroup = std::move(cgroup);
        vm.control_socket = control_socket;
        vm.console_socket = console_socket;
        vm.metrics_path = metrics_path;
        vm.stderr_path = stderr_path;
        vm.state = STATE_RUNNING;
        watch(vm, vm.pidfd.get(), false);
        if (!vm.log) {
            auto log = RotatingLog::open(m_store.log_path(vm.name));
            if (log)
                vm.log.emplace(std::move(*log));
            else
                spdlog::warn("VM '{}': console log: {}", vm.name, log.error().message());
        }
    }

    // kvmm opens its control socket once the machine is built, before any vCPU runs.
    auto const deadline = std::chrono::steady_clock::now() + m_options.start_timeout;
    while (true) {
        if (connect_unix_socket(control_socket))
            break;
        MutexLock guard(m_lock);
        if (guard.wait_for(m_changed, std::chrono::milliseconds(5), [&] { return vm.pid != pid; }))
            return Error::format("VM '{}' did not start: kvmm {}", vm.name, vm.last_exit_reason);
        if (std::chrono::steady_clock::now() > deadline) {
            guard.unlock();
            (void)stop_process(vm, std::chrono::seconds(1));
            return Error::format("VM '{}' did not start: kvmm's control socket did not appear within {} s", vm.name,
                                 m_options.start_timeout.count());
        }
    }
    {
        MutexLock guard(m_lock);
        vm.starting = false;
        if (saved) {
            // Restored: the record is spent (the files stay; the running VM maps its memory file).
            if (auto cleared = m_store.clear_saved_record(vm.name); !cleared)
                spdlog::warn("VM '{}': {}", vm.name, cleared.error().message());
            vm.saved.reset();
        }
        auto console = connect_unix_socket(console_socket);
        if (console && vm.pid == pid) {
            // kvmm created it as the VM's uid, 0600: kvmmctl console is for the control
            // socket's group as well (docs/kvmmctl.md).
            if (m_options.jail && m_options.socket_group) {
                if (auto shared = share_console_socket(console_socket, *m_options.socket_group); !shared)
                    spdlog::warn("VM '{}': console socket stays the VM's alone: {}", vm.name, shared.error().message());
            }
            ::fcntl(console->get(), F_SETFL, O_NONBLOCK);
            vm.console = std::move(*console);
            watch(vm, vm.console.get(), true);
        } else if (!console) {
            spdlog::warn("VM '{}': console: {}", vm.name, console.error().message());
        }
    }
    bool const pinned = std::any_of(definition.vcpu_pins.begin(), definition.vcpu_pins.end(),
                                    [](auto const& cpus) { return !cpus.empty(); });
    if (pinned) {
        // The vCPU threads start right after the control socket opens; give them a moment.
        Expected<void> result = Error("not tried");
        for (int attempt = 0; attempt < 200 && !result; ++attempt) {
            result = pin_vcpu_threads(pid, definition.vcpu_pins);
            if (!result)
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (!result)
            spdlog::warn("VM '{}': vCPU pinning: {}", vm.name, result.error().message());
    }
    spdlog::info("VM '{}' started: kvmm pid {}", vm.name, pid);
    crash_point("start:ready");
    return {};
}

bool Daemon::wait_for_exit(Vm& vm, std::chrono::milliseconds timeout) {
    MutexLock guard(m_lock);
    return guard.wait_for(m_changed, timeout, [&] { return vm.pid == 0; });
}

// SIGTERM (kvmm stops the VM and exits), then SIGKILL after `grace`.
Expected<void> Daemon::stop_process(Vm& vm, std::chrono::milliseconds grace) {
    {
        MutexLock guard(m_lock);
        if (vm.pid == 0)
            return {};
        vm.stop_requested = true;
        TRY(send_signal(vm.pidfd.get(), SIGTERM));
    }
    if (wait_for_exit(vm, grace))
        return {};
    {
        MutexLock guard(m_lock);
        if (vm.pid != 0) {
            spdlog::warn("VM '{}': kvmm pid {} ignored SIGTERM for {} ms, sending SIGKILL", vm.name, vm.pid,
                         grace.count());
            TRY(send_signal(vm.pidfd.get(), SIGKILL));
        }
    }
    if (!wait_for_exit(vm, std::chrono::seconds(10)))
        return Error::format("VM '{}': kvmm did not exit after SIGKILL", vm.name);
    return {};
}

namespace {

// SIGKILL to a process found in a VM's cgroup, through a pidfd, and a bounded wait for its end.
// The pid comes from the cgroup (a process kvmmd started), read just before; between that read
// and open_pidfd the process may have ended and its pid gone to an unrelated process. The pidfd
// pins one process, so the cgroup is read again after it is opened: a pid still listed there
// now is the pinned process, or the pinned one has ended and the signal cannot reach anyone else.
void kill_cgroup_member(std::string const& vm_name, Cgroup const& cgroup, pid_t pid) {
    auto pidfd = open_pidfd(pid);
    if (!pidfd)
        return; // gone already
    auto const members = cgroup.processes();
    if (!members) {
        spdlog::error("VM '{}': not stopping pid {}: its cgroup cannot be read again: {}", vm_name, pid,
                      members.error().message());
        return;
    }
    if (std::find(members->begin(), members->end(), pid) == members->end())
        return; // left the cgroup (ended): the pid may be another process's by now
    spdlog::warn("VM '{}': stopping kvmm pid {}, which no runtime record tracks", vm_name, pid);
    if (auto sent = send_signal(pidfd->get(), SIGKILL); !sent) {
        spdlog::error("VM '{}': {}", vm_name, sent.error().message());
        return;
    }
    if (!wait_readable(pidfd->get(), std::chrono::seconds(5)))
        spdlog::error("VM '{}': pid {} did not exit within 5 s of SIGKILL", vm_name, pid);
}

// The parent pid of `pid` (/proc/PID/status PPid), 0 when it cannot be read.
pid_t parent_of(pid_t pid) {
    std::ifstream status(fmt::format("/proc/{}/status", pid));
    std::string line;
    while (std::getline(status, line)) {
        if (line.starts_with("PPid:"))
            return static_cast<pid_t>(std::atoi(line.c_str() + 5));
    }
    return 0;
}

} // namespace

// After a daemon restart. The kernel is the source of truth: every process in the VM's cgroup
// is a kvmm (or a forked child about to become one) that an earlier daemon started. The one the
// runtime record names (same pid and start time) is adopted; every other one is stopped, so
// that no kvmm runs untracked and no VM has two. A VM left without a process is cleaned up:
// intent, record, *.tmp, sockets and cgroup.
void Daemon::recover(Vm& vm) {
    bool const interrupted_start = m_store.has_start_intent(vm.name);
    std::optional<RuntimeRecord> runtime;
    if (auto record = m_store.read_runtime_record(vm.name); !record)
        spdlog::warn("VM '{}': unreadable runtime record, treating it as absent: {}", vm.name,
                     record.error().message());
    else
        runtime = *record;
    std::optional<Cgroup> cgroup;
    std::vector<pid_t> members;
    bool members_known = true;
    if (auto existing = Cgroup::open_existing(m_options.cgroup_parent, vm.name)) {
        cgroup = std::move(*existing);
        if (auto listed = cgroup->processes()) {
            members = std::move(*listed);
        } else {
            members_known = false;
            spdlog::error("VM '{}': {}", vm.name, listed.error().message());
        }
    }
    bool const recorded_process_lives = runtime && is_same_process(*runtime);
    if (!members_known && !recorded_process_lives) {
        // Without the cgroup's member list, "no process" cannot be told from "processes not
        // seen": nothing is stopped or removed. A start finds the cgroup unreadable too and
        // refuses, so the VM cannot get a second kvmm either.
        spdlog::error("VM '{}': its cgroup's processes cannot be listed; leaving its cgroup and runtime state "
                      "as they are",
                      vm.name);
        MutexLock guard(m_lock);
        vm.last_exit_reason = "kvmmd could not list the processes in the VM's cgroup when it started; its "
                              "runtime state was left as it was";
        return;
    }
    if (members_known)
        m_store.remove_temporary_files(vm.name);
    // With the member list unreadable, the runtime record alone (pid and start time, checked
    // again through a pidfd below) identifies the process, and no other member is touched.
    bool const adopt =
        recorded_process_lives &&
        (!cgroup || !members_known || std::find(members.begin(), members.end(), runtime->pid) != members.end());
    size_t stopped = 0;
    for (pid_t const member : members) {
        if (adopt && member == runtime->pid)
            continue;
        // A child of the adopted process is part of it: kvmm-jailer runs the dynamic loader
        // (ld.so --list) in the VM's cgroup while it builds the jail, and killing that would
        // fail the start the runtime record says is under way.
        if (adopt && parent_of(member) == runtime->pid)
            continue;
        kill_cgroup_member(vm.name, *cgroup, member);
        ++stopped;
    }
    if (adopt) {
        if (interrupted_start) {
            // The start had recorded the process but not yet seen it come up; kvmm opens its
            // control socket once the machine is built.
            auto const deadline = std::chrono::steady_clock::now() + m_options.start_timeout;
            while (!connect_unix_socket(runtime->api_socket) && std::chrono::steady_clock::now() < deadline &&
                   is_same_process(*runtime))
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            (void)m_store.clear_start_intent(vm.name);
        }
        if (auto pidfd = open_pidfd(runtime->pid); pidfd && is_same_process(*runtime)) {
            reattach(vm, *runtime, std::move(*pidfd), std::move(cgroup));
            return;
        }
    }

    std::string const stderr_path = (m_store.root() / "logs" / (vm.name + ".kvmm.log")).string();
    MutexLock guard(m_lock);
    vm.stderr_path = stderr_path;
    if (runtime) {
        auto logged = exit_from_log(stderr_path);
        vm.state = logged.crashed ? STATE_CRASHED : STATE_SHUT_OFF;
        vm.last_exit_reason =
            fmt::format("kvmm pid {} ended while kvmmd was not running: {}", runtime->pid, logged.reason);
    } else if (interrupted_start || stopped > 0) {
        vm.state = STATE_SHUT_OFF;
        vm.last_exit_reason = fmt::format("start interrupted: kvmmd stopped before it recorded kvmm; {} "
                                          "untracked process(es) stopped",
                                          stopped);
    }
    if (runtime || interrupted_start || stopped > 0)
        spdlog::info("VM '{}': {}", vm.name, vm.last_exit_reason);
    if (!members_known) {
        // The recorded process ended while being adopted; other processes may still be in the
        // cgroup, unseen: their sockets and the cgroup stay.
        spdlog::error("VM '{}': its cgroup's processes cannot be listed; leaving its cgroup and runtime state "
                      "as they are",
                      vm.name);
        return;
    }
    if (auto cleared = m_store.clear_runtime_dir(vm.name); !cleared)
        spdlog::warn("VM '{}': {}", vm.name, cleared.error().message());
    release_jail(vm.name);
    if (cgroup) {
        // A killed process leaves the cgroup when it has exited; give the kernel a moment.
        Expected<void> removed = Error("not tried");
        for (int attempt = 0; attempt < 100 && !removed; ++attempt) {
            removed = cgroup->destroy();
            if (!removed)
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (!removed)
            spdlog::warn("VM '{}': cgroup not removed: {}", vm.name, removed.error().message());
    }
}

// Takes over a kvmm that kept running while no daemon was there.
void Daemon::reattach(Vm& vm, RuntimeRecord const& runtime, UniqueFd pidfd, std::optional<Cgroup> cgroup) {
    std::string const stderr_path = (m_store.root() / "logs" / (vm.name + ".kvmm.log")).string();
    auto described = KvmmClient(runtime.api_socket).describe();
    MutexLock guard(m_lock);
    vm.stderr_path = stderr_path;
    vm.pid = runtime.pid;
    vm.is_child = false;
    vm.pidfd = std::move(pidfd);
    vm.control_socket = runtime.api_socket;
    vm.console_socket = runtime.console_socket;
    // Beside the control socket: runtime/NAME/, or the jail root of a jailed VM.
    vm.metrics_path = (std::filesystem::path(runtime.api_socket).parent_path() / "metrics.json").string();
    vm.state = runtime.state == STATE_PAUSED ? STATE_PAUSED : STATE_RUNNING;
    if (described && described->contains("state"))
        vm.state = (*described)["state"] == "Paused" ? STATE_PAUSED : STATE_RUNNING;
    vm.cgroup = std::move(cgroup);
    watch(vm, vm.pidfd.get(), false);
    if (auto console = connect_unix_socket(runtime.console_socket)) {
        ::fcntl(console->get(), F_SETFL, O_NONBLOCK);
        vm.console = std::move(*console);
        vm.console_resume_tail = read_file_tail(m_store.log_path(vm.name), CONSOLE_RESUME_TAIL_BYTES);
        watch(vm, vm.console.get(), true);
    }
    if (auto log = RotatingLog::open(m_store.log_path(vm.name)))
        vm.log.emplace(std::move(*log));
    spdlog::info("VM '{}': re-attached to kvmm pid {} ({})", vm.name, vm.pid, vm.state);
}

void Daemon::monitor_main() {
    while (true) {
        epoll_event events[32];
        int const ready = ::epoll_wait(m_epoll.get(), events, 32, -1);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0) {
            spdlog::error("kvmmd monitor: epoll_wait: {}", std::strerror(errno));
            return;
        }
        for (int i = 0; i < ready; ++i) {
            uint64_t const token = events[i].data.u64;
            if (token == 0)
                return; // m_wake: the daemon is stopping
            std::shared_ptr<Vm> vm;
            bool is_console = false;
            {
                MutexLock guard(m_lock);
                auto found = m_watches.find(token);
                if (found == m_watches.end())
                    continue;
                vm = found->second.vm.lock();
                is_console = found->second.is_console;
                if (!vm) {
                    m_watches.erase(found);
                    continue;
                }
            }
            if (is_console)
                on_console_readable(vm);
            else
                on_process_exit(vm);
            MutexLock guard(m_lock);
            // A watch whose fd was closed is forgotten (its token is no longer in use).
            if (is_console ? !vm->console.is_valid() : !vm->pidfd.is_valid())
                m_watches.erase(token);
        }
    }
}

void Daemon::on_console_readable(std::shared_ptr<Vm> const& vm) {
    char buffer[16384];
    MutexLock guard(m_lock);
    if (!vm->console.is_valid())
        return;
    if (vm->console_resume_tail) {
        // The first output after a re-attach is kvmm's history (ConsoleServer), sent in one
        // piece: take all that is there, and log only what the log does not hold yet.
        std::string history;
        ssize_t received = 0;
        while ((received = ::recv(vm->console.get(), buffer, sizeof(buffer), 0)) > 0)
            history.append(buffer, static_cast<size_t>(received));
        if (history.empty() && received < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        size_t const skip = already_logged(*vm->console_resume_tail, history);
        vm->console_resume_tail.reset();
        record_console_output(*vm, std::span<char const>(history).subspan(skip));
        if (received == 0) // kvmm is gone
            close_console(*vm);
        return;
    }
    ssize_t const received = ::recv(vm->console.get(), buffer, sizeof(buffer), 0);
    if (received < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (received <= 0) { // kvmm is gone (or closed the console)
        close_console(*vm);
        return;
    }
    record_console_output(*vm, std::span<char const>(buffer, static_cast<size_t>(received)));
}

void Daemon::record_console_output(Vm& vm, std::span<char const> data) {
    if (data.empty())
        return;
    vm.scrollback.append(data);
    if (vm.log) {
        if (auto written = vm.log->write(data); !written)
            spdlog::warn("VM '{}': console log: {}", vm.name, written.error().message());
    }
}

void Daemon::close_console(Vm& vm) {
    ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, vm.console.get(), nullptr);
    vm.console.reset();
}

void Daemon::on_process_exit(std::shared_ptr<Vm> const& vm) {
    MutexLock guard(m_lock);
    if (!vm->pidfd.is_valid())
        return;
    std::optional<ExitStatus> status;
    if (vm->is_child) {
        // The pidfd is readable once the process is a zombie; reaping follows immediately.
        for (int attempt = 0; attempt < 1000 && !status; ++attempt) {
            status = reap_child(vm->pid);
            if (!status)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    bool crashed;
    std::string reason;
    if (status) {
        crashed = !status->success();
        reason = status->describe();
        if (crashed) {
            if (auto detail = last_error_line(vm->stderr_path); !detail.empty())
                reason += ": " + detail;
        }
    } else {
        auto logged = exit_from_log(vm->stderr_path);
        crashed = logged.crashed;
        reason = logged.reason;
    }
    ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, vm->pidfd.get(), nullptr);
    vm->pidfd.reset();
    // The console socket hangs up too; drain what is left of it first.
    if (vm->console.is_valid()) {
        guard.unlock();
        for (int i = 0; i < 64; ++i) {
            {
                MutexLock console_guard(m_lock);
                if (!vm->console.is_valid())
                    break;
            }
            on_console_readable(vm);
        }
        guard.lock();
        if (vm->console.is_valid())
            close_console(*vm);
    }
    if (vm->cgroup) {
        // The cgroup empties once the process is reaped (by us, or by its new parent).
        Expected<void> removed = Error("not tried");
        for (int attempt = 0; attempt < 50 && !removed; ++attempt) {
            removed = vm->cgroup->destroy();
            if (!removed)
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (!removed)
            spdlog::warn("VM '{}': cgroup not removed: {}", vm->name, removed.error().message());
        vm->cgroup.reset();
    }
    (void)m_store.clear_runtime_record(vm->name);
    release_jail(vm->name);
    spdlog::info("VM '{}': kvmm pid {} {}", vm->name, vm->pid, reason);
    vm->pid = 0;
    vm->last_exit_status = status;
    vm->last_exit_reason = reason;
    bool const requested = vm->stop_requested;
    // A start that fails (kvmm refused the configuration) leaves the VM shut off; the reason
    // is in last_exit and in start's error.
    vm->state = requested || !crashed || vm->starting ? vm->stopped_state() : STATE_CRASHED;
    bool restart = false;
    if (!requested && !vm->starting && !vm->removed && !m_stopping) {
        auto const policy = vm->definition.restart;
        restart = policy == VmDefinition::RestartPolicy::Always ||
                  (policy == VmDefinition::RestartPolicy::OnFailure && crashed);
        if (restart && !vm->restarts.allow(RestartLimiter::Clock::now())) {
            spdlog::error("VM '{}': restarted {} times within {} s; leaving it {}", vm->name, m_options.max_restarts,
                          m_options.restart_window.count(), vm->state);
            vm->last_exit_reason += fmt::format(" (restart limit of {} in {} s reached)", m_options.max_restarts,
                                                m_options.restart_window.count());
            restart = false;
        }
    }
    vm->stop_requested = false;
    if (restart)
        schedule_restart(vm->name);
    m_changed.notify_all();
}

std::optional<uint32_t> Daemon::jail_uid(std::string const& name) const {
    if (!m_options.jail)
        return std::nullopt;
    // The uid is recorded at the first jailed start; without a record there was no jail.
    std::ifstream recorded(uid_record(m_store.root() / "uids", name));
    uint32_t uid = 0;
    if (!(recorded >> uid))
        return std::nullopt;
    return uid;
}

void Daemon::release_jail(std::string const& name) {
    auto const uid = jail_uid(name);
    if (!uid)
        return;
    if (auto restored = restore_jail(*m_options.jail, jail_id(name, *uid)); !restored)
        spdlog::error("VM '{}': {}", name, restored.error().message());
}

void Daemon::schedule_restart(std::string const& name) {
    // Called with m_lock held; the restart takes the VM's operation lock, so it runs on its own
    // thread rather than stalling the monitor.
    m_helpers.emplace_back([this, name] {
        std::shared_ptr<Vm> vm;
        {
            MutexLock guard(m_lock);
            auto found = m_vms.find(name);
            if (found == m_vms.end() || m_stopping)
                return;
            vm = found->second;
        }
        MutexLock operation(vm->operation);
        {
            MutexLock guard(m_lock);
            if (vm->active() || vm->removed || m_stopping)
                return;
            ++vm->restart_count;
        }
        if (auto started = start(*vm); !started)
            spdlog::error("VM '{}': restart failed: {}", name, started.error().message());
    });
}

} // namespace kvmm

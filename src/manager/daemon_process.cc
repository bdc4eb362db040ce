// Daemon: the kvmm processes - start, stop, re-attach, and the monitor thread that sees them
// exit and pumps their consoles.
#include "manager/daemon_vm.h"
#include "manager/kvmm_client.h"
#include "manager/protocol.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <sys/epoll.h>
#include <sys/socket.h>
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

LoggedExit exit_from_log(std::string const& path) {
    std::ifstream file(path);
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
    {
        std::lock_guard guard(m_lock);
        if (vm.removed)
            return Error::format("VM '{}' is not defined", vm.name);
        if (vm.active())
            return Error::format("VM '{}' is already {}", vm.name, vm.state);
        definition = vm.definition;
        vm.starting = true;
        vm.stop_requested = false;
    }
    struct ClearStarting {
        Daemon& daemon;
        Vm& vm;
        ~ClearStarting() {
            std::lock_guard guard(daemon.m_lock);
            vm.starting = false;
        }
    } clear_starting { *this, vm };

    auto const runtime = m_store.runtime_dir(vm.name);
    std::string const control_socket = (runtime / "control.sock").string();
    std::string const console_socket = (runtime / "console.sock").string();
    std::string const metrics_path = (runtime / "metrics.json").string();
    std::string const stderr_path = (m_store.root() / "logs" / (vm.name + ".kvmm.log")).string();
    TRY(atomic_write_file(metrics_path, "", 0600));
    UniqueFd output(::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600));
    if (!output.is_valid())
        return Error::from_errno(fmt::format("cannot open '{}'", stderr_path));

    auto created = Cgroup::create(m_options.cgroup_parent, vm.name, limits_of(definition));
    if (!created) { // left over from a run whose cgroup could not be removed: reuse it
        if (auto existing = Cgroup::open_existing(m_options.cgroup_parent, vm.name);
            existing && existing->set_limits(limits_of(definition)))
            created = std::move(*existing);
    }
    if (!created)
        return created.error().with_context(fmt::format("VM '{}': cgroup", vm.name));
    Cgroup cgroup = std::move(*created);

    auto arguments = kvmm_arguments(definition, m_options.kvmm_binary, control_socket, console_socket);
    // kvmm_arguments() names the instance (--id); info-level logging records "VM stopped: ..."
    // for every exit, which is how an exit is explained when kvmm is not our child.
    for (char const* extra : { "--log-level", "info", "--metrics", metrics_path.c_str() })
        arguments.emplace_back(extra);
    auto spawned = spawn_process(arguments, output.get(), &cgroup);
    if (!spawned) {
        (void)cgroup.destroy();
        return spawned.error();
    }
    pid_t const pid = spawned->pid;
    RuntimeRecord record { pid, process_start_time(pid).value_or(0), control_socket, console_socket, STATE_RUNNING };
    if (auto written = m_store.write_runtime_record(vm.name, record); !written)
        spdlog::error("VM '{}': {}", vm.name, written.error().message());
    {
        std::lock_guard guard(m_lock);
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
        std::unique_lock guard(m_lock);
        if (m_changed.wait_for(guard, std::chrono::milliseconds(5), [&] { return vm.pid != pid; }))
            return Error::format("VM '{}' did not start: kvmm {}", vm.name, vm.last_exit_reason);
        if (std::chrono::steady_clock::now() > deadline) {
            guard.unlock();
            (void)stop_process(vm, std::chrono::seconds(1));
            return Error::format("VM '{}' did not start: kvmm's control socket did not appear within {} s", vm.name,
                                 m_options.start_timeout.count());
        }
    }
    {
        std::lock_guard guard(m_lock);
        vm.starting = false;
        auto console = connect_unix_socket(console_socket);
        if (console && vm.pid == pid) {
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
    return {};
}

bool Daemon::wait_for_exit(Vm& vm, std::chrono::milliseconds timeout) {
    std::unique_lock guard(m_lock);
    return m_changed.wait_for(guard, timeout, [&] { return vm.pid == 0; });
}

// SIGTERM (kvmm stops the VM and exits), then SIGKILL after `grace`.
Expected<void> Daemon::stop_process(Vm& vm, std::chrono::milliseconds grace) {
    {
        std::lock_guard guard(m_lock);
        if (vm.pid == 0)
            return {};
        vm.stop_requested = true;
        TRY(send_signal(vm.pidfd.get(), SIGTERM));
    }
    if (wait_for_exit(vm, grace))
        return {};
    {
        std::lock_guard guard(m_lock);
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

// After a daemon restart: take over a kvmm that kept running, or record how it ended.
void Daemon::reattach(Vm& vm) {
    auto record = m_store.read_runtime_record(vm.name);
    if (!record) {
        spdlog::warn("VM '{}': unreadable runtime record: {}", vm.name, record.error().message());
        return;
    }
    if (!*record)
        return;
    RuntimeRecord const& runtime = **record;
    std::string const stderr_path = (m_store.root() / "logs" / (vm.name + ".kvmm.log")).string();
    auto pidfd = is_same_process(runtime) ? open_pidfd(runtime.pid) : Expected<UniqueFd>(Error("not running"));
    std::lock_guard guard(m_lock);
    vm.stderr_path = stderr_path;
    if (!pidfd) {
        auto logged = exit_from_log(stderr_path);
        vm.state = logged.crashed ? STATE_CRASHED : STATE_SHUT_OFF;
        vm.last_exit_reason =
            fmt::format("kvmm pid {} ended while kvmmd was not running: {}", runtime.pid, logged.reason);
        (void)m_store.clear_runtime_record(vm.name);
        if (auto cgroup = Cgroup::open_existing(m_options.cgroup_parent, vm.name))
            (void)cgroup->destroy();
        return;
    }
    vm.pid = runtime.pid;
    vm.is_child = false;
    vm.pidfd = std::move(*pidfd);
    vm.control_socket = runtime.api_socket;
    vm.console_socket = runtime.console_socket;
    vm.metrics_path = (m_store.runtime_dir(vm.name) / "metrics.json").string();
    vm.state = runtime.state == STATE_PAUSED ? STATE_PAUSED : STATE_RUNNING;
    if (auto described = KvmmClient(runtime.api_socket).describe(); described && described->contains("state"))
        vm.state = (*described)["state"] == "Paused" ? STATE_PAUSED : STATE_RUNNING;
    if (auto cgroup = Cgroup::open_existing(m_options.cgroup_parent, vm.name))
        vm.cgroup = std::move(*cgroup);
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
                std::lock_guard guard(m_lock);
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
            std::lock_guard guard(m_lock);
            // A watch whose fd was closed is forgotten (its token is no longer in use).
            if (is_console ? !vm->console.is_valid() : !vm->pidfd.is_valid())
                m_watches.erase(token);
        }
    }
}

void Daemon::on_console_readable(std::shared_ptr<Vm> const& vm) {
    char buffer[16384];
    std::lock_guard guard(m_lock);
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
    std::unique_lock guard(m_lock);
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
                std::lock_guard console_guard(m_lock);
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
    spdlog::info("VM '{}': kvmm pid {} {}", vm->name, vm->pid, reason);
    vm->pid = 0;
    vm->last_exit_status = status;
    vm->last_exit_reason = reason;
    bool const requested = vm->stop_requested;
    // A start that fails (kvmm refused the configuration) leaves the VM shut off; the reason
    // is in last_exit and in start's error.
    vm->state = requested || !crashed || vm->starting ? STATE_SHUT_OFF : STATE_CRASHED;
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

void Daemon::schedule_restart(std::string const& name) {
    // Called with m_lock held; the restart takes the VM's operation lock, so it runs on its own
    // thread rather than stalling the monitor.
    m_helpers.emplace_back([this, name] {
        std::shared_ptr<Vm> vm;
        {
            std::lock_guard guard(m_lock);
            auto found = m_vms.find(name);
            if (found == m_vms.end() || m_stopping)
                return;
            vm = found->second;
        }
        std::lock_guard operation(vm->operation);
        {
            std::lock_guard guard(m_lock);
            if (vm->active() || vm->removed || m_stopping)
                return;
            ++vm->restart_count;
        }
        if (auto started = start(*vm); !started)
            spdlog::error("VM '{}': restart failed: {}", name, started.error().message());
    });
}

} // namespace kvmm

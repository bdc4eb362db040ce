// Daemon: construction, the verbs, and the metrics text. Process supervision is in
// daemon_process.cc.
#include "manager/daemon.h"

#include "manager/daemon_vm.h"
#include "manager/kvmm_client.h"
#include "manager/protocol.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kvmm {

using nlohmann::json;

namespace {

// Most lines `logs` returns, and the most of the log file it reads.
constexpr size_t MAX_LOG_LINES = 10000;
constexpr uint64_t MAX_LOG_READ = 4 * 1024 * 1024;

Expected<void> check_readable_file(std::string const& path, std::string_view key) {
    std::error_code error;
    auto const status = std::filesystem::status(path, error);
    if (error || !std::filesystem::exists(status))
        return Error::format("{} '{}' does not exist", key, path);
    if (!std::filesystem::is_regular_file(status))
        return Error::format("{} '{}' is not a regular file", key, path);
    if (::access(path.c_str(), R_OK) != 0)
        return Error::format("{} '{}' is not readable", key, path);
    return {};
}

std::optional<double> uptime_seconds(pid_t pid) {
    auto const started = process_start_time(pid);
    std::ifstream uptime_file("/proc/uptime");
    double system_uptime = 0;
    if (!started || !(uptime_file >> system_uptime))
        return std::nullopt;
    double const ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    return std::max(0.0, system_uptime - static_cast<double>(*started) / ticks);
}

// Prometheus text exposition format: label values escape \, " and newline.
std::string label(std::string_view value) {
    std::string escaped;
    for (char c : value) {
        if (c == '\\' || c == '"')
            escaped += '\\';
        if (c == '\n') {
            escaped += "\\n";
            continue;
        }
        escaped += c;
    }
    return escaped;
}

// The last complete JSON line of kvmm's metrics file (one object per FlushMetrics).
std::optional<json> last_metrics_line(std::string const& path) {
    std::ifstream file(path);
    std::string line, last;
    while (std::getline(file, line)) {
        if (!line.empty())
            last = line;
    }
    auto parsed = json::parse(last, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object())
        return std::nullopt;
    return parsed;
}

// Takes STATE_DIR/kvmmd.lock (flock, exclusive, without waiting) before anything in the state
// directory is read or changed; only the directory itself is created if it is missing. The
// descriptor is close-on-exec (kvmm does not inherit it; spawn_process's child closes it before
// it waits), so only the daemon holds the lock, and the kernel releases it when the daemon ends,
// however it ends.
Expected<UniqueFd> lock_state_directory(std::filesystem::path const& state_dir) {
    if (state_dir.empty())
        return Error("state directory: empty path");
    std::error_code error;
    std::filesystem::create_directories(state_dir, error);
    if (error)
        return Error(fmt::format("create state directory {}: {}", state_dir.string(), error.message()), error.value());
    auto const path = state_dir / "kvmmd.lock";
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("opening the state directory's lock '{}'", path.string()));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            return Error::format("another kvmmd holds {} (it has '{}' locked); not starting", state_dir.string(),
                                 path.string());
        return Error::from_errno(fmt::format("locking '{}'", path.string()));
    }
    return fd;
}

} // namespace

Expected<std::unique_ptr<Daemon>> Daemon::create(DaemonOptions options) {
    if (options.kvmm_binary.empty() || options.kvmm_binary[0] != '/')
        return Error::format("the kvmm binary path '{}' must be absolute", options.kvmm_binary);
    TRY(check_readable_file(options.kvmm_binary, "kvmm binary"));
    if (options.jail) {
        if (options.jail->jailer_binary.empty() || options.jail->jailer_binary[0] != '/')
            return Error::format("the kvmm-jailer path '{}' must be absolute", options.jail->jailer_binary);
        TRY(check_readable_file(options.jail->jailer_binary, "kvmm-jailer binary"));
    }
    // First, before the recovery below can stop a process or remove a file: a second daemon on
    // the same directory would take the live one's starting kvmm for an orphan and kill it.
    auto state_lock = TRY(lock_state_directory(options.state_dir));
    auto store = TRY(StateStore::open(options.state_dir));
    auto volumes = TRY(VolumeStore::open(options.state_dir / "volumes"));
    if (options.jail) {
        // kvmm-jailer wants its base root's and writable by root alone (docs/jailer.md).
        std::error_code error;
        std::filesystem::create_directories(options.jail->base, error);
        if (error || ::chmod(options.jail->base.c_str(), 0755) != 0)
            return Error::format("cannot create the jail base '{}': {}", options.jail->base.string(),
                                 error ? error.message() : std::strerror(errno));
    }
    std::unique_ptr<Daemon> daemon(new Daemon(std::move(options), std::move(state_lock), std::move(store)));
    {
        MutexLock guard(daemon->m_volume_lock);
        daemon->m_volumes.emplace(std::move(volumes));
    }
    daemon->m_epoll = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!daemon->m_epoll.is_valid())
        return Error::from_errno("epoll_create1");
    daemon->m_wake.emplace(TRY(EventFd::create()));
    epoll_event wake {};
    wake.events = EPOLLIN;
    wake.data.u64 = 0;
    if (::epoll_ctl(daemon->m_epoll.get(), EPOLL_CTL_ADD, daemon->m_wake->fd(), &wake) != 0)
        return Error::from_errno("epoll_ctl");

    for (auto const& name : TRY(daemon->m_store.list())) {
        auto definition = daemon->m_store.load_definition(name);
        if (!definition) {
            spdlog::error("definition '{}' cannot be loaded, skipping it: {}", name, definition.error().message());
            continue;
        }
        auto vm = std::make_shared<Vm>(std::move(*definition), daemon->m_options.max_restarts,
                                       daemon->m_options.restart_window);
        {
            MutexLock guard(daemon->m_lock);
            daemon->m_vms[name] = vm;
        }
        daemon->recover(*vm);
        auto saved = daemon->m_store.read_saved_record(name);
        MutexLock guard(daemon->m_lock);
        if (!saved)
            spdlog::error("VM '{}': saved state record: {}", name, saved.error().message());
        else if (*saved) {
            vm->saved = std::move(*saved);
            if (vm->state == STATE_SHUT_OFF)
                vm->state = STATE_SAVED;
        }
    }
    daemon->m_monitor = std::thread([raw = daemon.get()] { raw->monitor_main(); });
    return daemon;
}

Daemon::Daemon(DaemonOptions options, UniqueFd state_lock, StateStore store)
    : m_options(std::move(options)), m_state_lock(std::move(state_lock)), m_store(std::move(store)) {}

Daemon::~Daemon() {
    std::vector<std::thread> helpers;
    {
        MutexLock guard(m_lock);
        m_stopping = true;
    }
    if (m_wake)
        (void)m_wake->signal();
    if (m_monitor.joinable())
        m_monitor.join();
    // Helpers may add more helpers only while not stopping; take them all now.
    {
        MutexLock guard(m_lock);
        helpers.swap(m_helpers);
    }
    for (auto& helper : helpers)
        helper.join();
}

void Daemon::start_autostart_vms() {
    std::vector<std::shared_ptr<Vm>> candidates;
    {
        MutexLock guard(m_lock);
        for (auto const& [name, vm] : m_vms) {
            if (vm->definition.autostart && !vm->active())
                candidates.push_back(vm);
        }
    }
    for (auto const& vm : candidates) {
        MutexLock operation(vm->operation);
        if (auto started = start(*vm); !started)
            spdlog::error("autostart of VM '{}' failed: {}", vm->name, started.error().message());
    }
}

json Daemon::handle(json const& request) {
    auto verb = required_string(request, "verb");
    if (!verb)
        return error_response(verb.error().message());
    auto result = dispatch(*verb, request);
    if (!result)
        return error_response(result.error().message());
    return ok_response(std::move(*result));
}

Expected<std::shared_ptr<Daemon::Vm>> Daemon::find(std::string const& name) {
    TRY(validate_vm_name(name));
    MutexLock guard(m_lock);
    auto found = m_vms.find(name);
    if (found == m_vms.end())
        return Error::format("VM '{}' is not defined", name);
    return found->second;
}

Expected<json> Daemon::dispatch(std::string const& verb, json const& request) {
    if (verb == "define")
        return define(request);
    if (verb == "edit")
        return edit(request);
    if (verb == "list")
        return list(TRY(optional_bool(request, "all")).value_or(false));
    if (verb == "metrics")
        return json { { "text", metrics() } };
    if (verb == "vol-create")
        return volume_create(request);
    if (verb == "vol-list")
        return volume_list();
    if (verb == "vol-info")
        return volume_info(request);
    if (verb == "vol-delete")
        return volume_delete(request);
    if (verb == "clone")
        return clone(request);
    static constexpr std::string_view VM_VERBS[] = { "undefine", "start",  "shutdown", "destroy",   "reboot",
                                                     "suspend",  "resume", "info",     "autostart", "logs",
                                                     "console",  "dump",   "save",     "restore",   "snapshot" };
    if (std::find(std::begin(VM_VERBS), std::end(VM_VERBS), verb) == std::end(VM_VERBS))
        return Error::format("unknown verb '{}'", verb);

    auto const name = TRY(required_string(request, "name"));
    auto vm = TRY(find(name));
    if (verb == "info") {
        MutexLock guard(m_lock);
        return info(*vm);
    }
    if (verb == "console")
        return console(*vm);
    if (verb == "dump") {
        MutexLock guard(m_lock);
        return json { { "name", vm->name }, { "toml", to_toml(vm->definition) } };
    }
    if (verb == "logs") {
        auto const lines = TRY(optional_unsigned(request, "lines"));
        return logs(*vm, lines.value_or(50));
    }
    // The verbs that change the VM: one at a time per VM.
    MutexLock operation(vm->operation);
    if (verb == "undefine")
        return undefine(*vm);
    if (verb == "autostart")
        return set_autostart(*vm, request);
    if (verb == "start")
        TRY(start(*vm));
    else if (verb == "shutdown") {
        auto const timeout = TRY(optional_unsigned(request, "timeout_s"));
        TRY(shutdown(*vm, std::chrono::seconds(timeout.value_or(30))));
    } else if (verb == "destroy")
        TRY(destroy(*vm));
    else if (verb == "reboot") {
        TRY(destroy(*vm));
        TRY(start(*vm));
    } else if (verb == "suspend")
        TRY(set_paused(*vm, true));
    else if (verb == "resume")
        TRY(set_paused(*vm, false));
    else if (verb == "save")
        TRY(save(*vm, request));
    else if (verb == "restore")
        TRY(restore(*vm));
    else if (verb == "snapshot")
        return snapshot(*vm, request);
    MutexLock guard(m_lock);
    return info(*vm);
}

// Parses and checks a definition the way start would use it: valid TOML and values (the config
// library's validate(), as kvmm's), host block devices written only with the explicit key,
// and the kernel and initrd files present, so a definition that cannot start is not stored.
Expected<VmDefinition> Daemon::checked_definition(std::string const& toml_text) {
    auto definition = TRY(parse_definition(toml_text));
    TRY(check_host_block_devices(definition));
    TRY(check_readable_file(definition.kernel, "kernel"));
    if (definition.initrd)
        TRY(check_readable_file(*definition.initrd, "initrd"));
    return definition;
}

Expected<json> Daemon::define(json const& request) {
    auto const text = TRY(required_string(request, "toml"));
    auto definition = TRY(checked_definition(text));
    MutexLock guard(m_lock);
    if (m_vms.contains(definition.name))
        return Error::format("VM '{}' is already defined (use edit to change it, or undefine it first)",
                             definition.name);
    TRY(m_store.save_definition(definition));
    std::string const name = definition.name;
    m_vms[name] = std::make_shared<Vm>(std::move(definition), m_options.max_restarts, m_options.restart_window);
    return json { { "name", name }, { "state", STATE_SHUT_OFF } };
}

Expected<json> Daemon::edit(json const& request) {
    auto const name = TRY(required_string(request, "name"));
    auto vm = TRY(find(name));
    auto const text = TRY(required_string(request, "toml"));
    auto definition = TRY(checked_definition(text));
    if (definition.name != name)
        return Error::format("name = \"{}\" in the edited definition: renaming VM '{}' is not supported",
                             definition.name, name);
    MutexLock operation(vm->operation);
    MutexLock guard(m_lock);
    if (vm->removed)
        return Error::format("VM '{}' is not defined", name);
    TRY(m_store.save_definition(definition));
    bool const active = vm->active();
    vm->definition = std::move(definition);
    return json { { "name", name }, { "applies", active ? "at the next start" : "now" } };
}

Expected<json> Daemon::undefine(Vm& vm) {
    MutexLock guard(m_lock);
    if (vm.active())
        return Error::format("VM '{}' is {}: destroy or shut it down before undefining it", vm.name, vm.state);
    // The kernel's view too: a process in the VM's cgroup is a kvmm that must not lose its VM.
    if (auto cgroup = Cgroup::open_existing(m_options.cgroup_parent, vm.name)) {
        auto const members = TRY(cgroup->processes());
        if (!members.empty())
            return Error::format("VM '{}' still has process(es) {} in its cgroup: not undefining it", vm.name,
                                 fmt::join(members, ", "));
        (void)cgroup->destroy();
    }
    TRY(m_store.remove_definition(vm.name));
    (void)m_store.clear_runtime_record(vm.name);
    std::error_code ignored;
    std::filesystem::remove_all(m_store.runtime_dir(vm.name), ignored);
    // Its snapshots are kvmmd's files; a file `save` wrote where the administrator said stays.
    (void)m_store.clear_saved_record(vm.name);
    std::filesystem::remove_all(m_store.root() / "snapshots" / vm.name, ignored);
    forget_vm_uid(m_store.root() / "uids", vm.name);
    vm.removed = true;
    m_vms.erase(vm.name);
    return json { { "name", vm.name } };
}

Expected<json> Daemon::set_autostart(Vm& vm, json const& request) {
    auto const enabled = TRY(optional_bool(request, "enabled"));
    if (!enabled)
        return Error("autostart needs \"enabled\": true or false");
    MutexLock guard(m_lock);
    VmDefinition changed = vm.definition;
    changed.autostart = *enabled;
    TRY(m_store.save_definition(changed));
    vm.definition = std::move(changed);
    return json { { "name", vm.name }, { "autostart", *enabled } };
}

Expected<void> Daemon::shutdown(Vm& vm, std::chrono::seconds timeout) {
    std::string control_socket;
    bool paused = false;
    {
        MutexLock guard(m_lock);
        if (!vm.active())
            return Error::format("VM '{}' is not running (state: {})", vm.name, vm.state);
        vm.stop_requested = true;
        control_socket = vm.control_socket;
        paused = vm.state == STATE_PAUSED;
    }
    KvmmClient client(control_socket);
    // A paused guest cannot see the key press.
    if (paused)
        TRY(client.resume());
    // The guest decides what Ctrl+Alt+Del means (kvmm's ACPI-less PC has no power button);
    // a guest that ignores it is destroyed after the timeout, as virsh shutdown --timeout.
    if (auto sent = client.send_ctrl_alt_del(); !sent)
        spdlog::warn("VM '{}': {}", vm.name, sent.error().message());
    if (wait_for_exit(vm, timeout))
        return {};
    spdlog::warn("VM '{}' did not shut down within {} s; destroying it", vm.name, timeout.count());
    return stop_process(vm, std::chrono::seconds(5));
}

Expected<void> Daemon::destroy(Vm& vm) {
    {
        MutexLock guard(m_lock);
        // A saved VM has no process: destroy discards its saved state (virsh's
        // managedsave-remove), so that one whose snapshot no longer loads can boot afresh.
        if (!vm.active() && vm.saved) {
            TRY(m_store.clear_saved_record(vm.name));
            vm.saved.reset();
            vm.state = STATE_SHUT_OFF;
            return {};
        }
        if (!vm.active())
            return Error::format("VM '{}' is not running (state: {})", vm.name, vm.state);
    }
    return stop_process(vm, std::chrono::seconds(5));
}

Expected<void> Daemon::set_paused(Vm& vm, bool paused) {
    std::string control_socket;
    {
        MutexLock guard(m_lock);
        char const* const expected = paused ? STATE_RUNNING : STATE_PAUSED;
        if (vm.state != expected)
            return Error::format("VM '{}' is {}, not {}", vm.name, vm.state, expected);
        control_socket = vm.control_socket;
    }
    KvmmClient client(control_socket);
    TRY(paused ? client.pause() : client.resume());
    MutexLock guard(m_lock);
    if (vm.pid == 0)
        return Error::format("VM '{}' stopped meanwhile", vm.name);
    vm.state = paused ? STATE_PAUSED : STATE_RUNNING;
    auto record = m_store.read_runtime_record(vm.name);
    if (record && *record) {
        (*record)->state = vm.state;
        TRY(m_store.write_runtime_record(vm.name, **record));
    }
    return {};
}

json Daemon::list(bool all) {
    MutexLock guard(m_lock);
    json vms = json::array();
    for (auto const& [name, vm] : m_vms) {
        if (!all && !vm->active())
            continue;
        vms.push_back({ { "name", name },
                        { "state", vm->state },
                        { "pid", vm->pid ? json(vm->pid) : json(nullptr) },
                        { "autostart", vm->definition.autostart } });
    }
    return json { { "vms", std::move(vms) } };
}

// Called with m_lock held.
json Daemon::info(Vm& vm) {
    json result { { "name", vm.name },
                  { "state", vm.state },
                  { "vcpus", vm.definition.vcpus },
                  { "memory_mib", vm.definition.memory_size >> 20 },
                  { "autostart", vm.definition.autostart },
                  { "restart", restart_policy_name(vm.definition.restart) },
                  { "restarts", vm.restart_count },
                  { "pid", nullptr },
                  { "uptime_s", nullptr },
                  { "cpu_time_ns", nullptr },
                  { "memory_bytes", nullptr } };
    if (vm.saved)
        result["saved"] = { { "snapshot_path", vm.saved->snapshot_path }, { "memory_path", vm.saved->memory_path } };
    if (vm.pid != 0) {
        result["pid"] = vm.pid;
        if (auto uptime = uptime_seconds(vm.pid))
            result["uptime_s"] = *uptime;
        result["control_socket"] = vm.control_socket;
        result["console_socket"] = vm.console_socket;
        if (vm.cgroup) {
            if (auto usage = vm.cgroup->usage()) {
                result["cpu_time_ns"] = usage->cpu_usage_ns;
                result["memory_bytes"] = usage->memory_bytes;
            }
            json paths = json::array();
            for (auto const& path : vm.cgroup->paths())
                paths.push_back(path.string());
            result["cgroup"] = std::move(paths);
        }
    }
    if (!vm.last_exit_reason.empty()) {
        json last { { "reason", vm.last_exit_reason } };
        if (vm.last_exit_status) {
            last["exit_status"] = vm.last_exit_status->signal ? json(nullptr) : json(vm.last_exit_status->code);
            last["signal"] = vm.last_exit_status->signal ? json(vm.last_exit_status->signal) : json(nullptr);
        }
        result["last_exit"] = std::move(last);
    }
    return result;
}

Expected<json> Daemon::logs(Vm& vm, size_t lines) {
    lines = std::min(lines, MAX_LOG_LINES);
    // Not through a symbolic link planted at the log's name (read_file_tail uses O_NOFOLLOW).
    std::string const text = read_file_tail(m_store.log_path(vm.name), MAX_LOG_READ);
    // Keep the last `lines` lines (a final line without '\n' counts).
    size_t position = text.size();
    if (position > 0 && text.back() == '\n')
        --position;
    size_t found = 0;
    while (position > 0 && found < lines) {
        size_t const newline = text.rfind('\n', position - 1);
        if (newline == std::string::npos) {
            position = 0;
            break;
        }
        ++found;
        if (found == lines) {
            position = newline + 1;
            break;
        }
        position = newline;
    }
    if (lines == 0)
        position = text.size();
    return json { { "name", vm.name }, { "text", text.substr(position) } };
}

Expected<json> Daemon::console(Vm& vm) {
    MutexLock guard(m_lock);
    if (!vm.active())
        return Error::format("VM '{}' is not running (state: {}): it has no console", vm.name, vm.state);
    return json { { "name", vm.name },
                  { "console_socket", vm.console_socket },
                  { "scrollback", vm.scrollback.contents() } };
}

// Prometheus text exposition format 0.0.4: per VM its state, CPU time and memory from the
// cgroup, and the counters kvmm writes on FlushMetrics (vCPU exits, device counters).
std::string Daemon::metrics() {
    struct Sample {
        std::string name, state, control_socket, metrics_path;
        std::optional<CgroupUsage> usage;
    };
    std::vector<Sample> samples;
    {
        MutexLock guard(m_lock);
        for (auto const& [name, vm] : m_vms) {
            Sample sample { name, vm->state, vm->control_socket, vm->metrics_path, std::nullopt };
            if (vm->active() && vm->cgroup) {
                if (auto usage = vm->cgroup->usage())
                    sample.usage = *usage;
            }
            if (!vm->active())
                sample.control_socket.clear();
            samples.push_back(std::move(sample));
        }
    }
    std::ostringstream out;
    out << "# HELP kvmm_vm_state VM state: 1 for the state the VM is in.\n# TYPE kvmm_vm_state gauge\n";
    for (auto const& sample : samples) {
        for (char const* state : { STATE_SHUT_OFF, STATE_RUNNING, STATE_PAUSED, STATE_CRASHED })
            out << fmt::format("kvmm_vm_state{{name=\"{}\",state=\"{}\"}} {}\n", label(sample.name), state,
                               sample.state == state ? 1 : 0);
    }
    out << "# HELP kvmm_vm_cpu_seconds_total CPU time of the VM's kvmm process (cgroup).\n"
           "# TYPE kvmm_vm_cpu_seconds_total counter\n";
    for (auto const& sample : samples) {
        if (sample.usage)
            out << fmt::format("kvmm_vm_cpu_seconds_total{{name=\"{}\"}} {:.9f}\n", label(sample.name),
                               static_cast<double>(sample.usage->cpu_usage_ns) / 1e9);
    }
    out << "# HELP kvmm_vm_memory_bytes Memory charged to the VM's cgroup.\n# TYPE kvmm_vm_memory_bytes gauge\n";
    for (auto const& sample : samples) {
        if (sample.usage)
            out << fmt::format("kvmm_vm_memory_bytes{{name=\"{}\"}} {}\n", label(sample.name),
                               sample.usage->memory_bytes);
    }
    std::string exits = "# HELP kvmm_vm_vcpu_exits_total vCPU exits to kvmm by reason.\n"
                        "# TYPE kvmm_vm_vcpu_exits_total counter\n";
    std::string devices = "# HELP kvmm_vm_device_counter Device counters reported by kvmm (virtio queues, "
                          "block and net bytes and requests).\n# TYPE kvmm_vm_device_counter counter\n";
    for (auto const& sample : samples) {
        if (sample.control_socket.empty())
            continue;
        if (auto flushed = KvmmClient(sample.control_socket).flush_metrics(); !flushed) {
            spdlog::warn("VM '{}': metrics: {}", sample.name, flushed.error().message());
            continue;
        }
        auto line = last_metrics_line(sample.metrics_path);
        if (!line)
            continue;
        if (auto vcpus = line->find("vcpu"); vcpus != line->end() && vcpus->is_array()) {
            for (size_t index = 0; index < vcpus->size(); ++index) {
                for (auto const& [key, value] : (*vcpus)[index].items()) {
                    if (value.is_number_unsigned() && key.starts_with("exit_"))
                        exits += fmt::format("kvmm_vm_vcpu_exits_total{{name=\"{}\",vcpu=\"{}\",reason=\"{}\"}} {}\n",
                                             label(sample.name), index, label(key.substr(5)), value.get<uint64_t>());
                }
            }
        }
        if (auto found = line->find("devices"); found != line->end() && found->is_object()) {
            for (auto const& [device, counters] : found->items()) {
                if (!counters.is_object())
                    continue;
                for (auto const& [counter, value] : counters.items()) {
                    if (value.is_number_unsigned())
                        devices +=
                            fmt::format("kvmm_vm_device_counter{{name=\"{}\",device=\"{}\",counter=\"{}\"}} {}\n",
                                        label(sample.name), label(device), label(counter), value.get<uint64_t>());
                }
            }
        }
    }
    out << exits << devices;
    return out.str();
}

} // namespace kvmm

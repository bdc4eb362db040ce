// kvmm: run one VM, configured by command-line flags, by a Firecracker-style JSON config
// file (--config-file), or through the Firecracker-compatible HTTP API on a Unix socket
// (--api-sock), in which case kvmm waits for InstanceStart.
//
// Exit status: 0 when the guest powers off or resets, 1 for bad configuration
// (including a host without usable KVM), 2 when the guest dies (triple fault,
// KVM internal error) or kvmm cannot keep it running, 128+N on signal N, 159 when a thread
// made a system call its seccomp filter forbids (docs/security.md).
#include "api/api_server.h"
#include "api/firecracker_api.h"
#include "api/host_checks.h"
#include "api/microvm_config.h"
#include "api/resource_parsers.h"
#include "base/file.h"
#include "base/logging.h"
#include "base/open_file_limit.h"
#include "base/path.h"
#include "cli/snapshot_rebase_command.h"
#include "cli/vmm_control.h"
#include "hypervisor/kvm/kvm_ioctl_groups.h"
#include "hypervisor/kvm/kvm_system.h"
#include "sandbox/sanitized_build.h"
#include "sandbox/seccomp_filter.h"
#include "sandbox/seccomp_filter_file.h"
#include "sandbox/sigsys_report.h"
#include "vmm/device_options.h"
#include "vmm/machine.h"
#include "vmm/snapshot_file.h"
#include "vmm/vm_config.h"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <initializer_list>
#include <optional>
#include <pthread.h>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#ifndef KVMM_VERSION
#define KVMM_VERSION "0.0.0"
#endif

namespace {

constexpr int EXIT_BAD_CONFIGURATION = 1;
// Largest --config-file we read (Firecracker's API bodies are capped at 50 KiB; a config file
// holds several of them).
constexpr uint64_t MAX_CONFIG_FILE_SIZE = 1 << 20;

int fail(std::string const& message) {
    std::fprintf(stderr, "kvmm: error: %s\n", message.c_str());
    return EXIT_BAD_CONFIGURATION;
}

// The seccomp filters of every thread role (docs/security.md), compiled at start; empty with
// --no-seccomp. Set by main() before any thread starts, read only afterwards.
std::optional<kvmm::SeccompFilters> g_seccomp_filters;

// The calling thread takes `role`: no_new_privs, then its filter (with seccomp on).
kvmm::Expected<void> enter_thread_role(kvmm::ThreadRole role, std::string_view thread_name) {
    if (!g_seccomp_filters)
        return kvmm::set_no_new_privileges();
    return g_seccomp_filters->install(role, thread_name);
}

// For threads whose start cannot return an error: a thread that cannot enter its sandbox must
// not go on unfiltered.
void enter_thread_role_or_exit(kvmm::ThreadRole role, std::string_view thread_name) {
    if (auto entered = enter_thread_role(role, thread_name); !entered) {
        std::fprintf(stderr, "kvmm: error: %s\n", entered.error().message().c_str());
        std::_Exit(EXIT_BAD_CONFIGURATION);
    }
}

// The machine's sandbox phases: no_new_privs for the main thread (and the vCPU threads it will
// create) once every host resource is open; each vCPU thread and then the event loop install
// their role's filter (Machine::run).
kvmm::MachineHooks sandbox_hooks() {
    kvmm::MachineHooks hooks;
    hooks.enter_sandbox = [] { return kvmm::set_no_new_privileges(); };
    hooks.enter_vcpu_thread = [](uint32_t index) {
        return enter_thread_role(kvmm::ThreadRole::Vcpu, fmt::format("vcpu{}", index));
    };
    hooks.enter_event_loop = [] { return enter_thread_role(kvmm::ThreadRole::Vmm, "kvmm"); };
    return hooks;
}

// Compiles the filters: kvmm's table, or the --seccomp-filter file.
kvmm::Expected<void> prepare_seccomp(bool no_seccomp, std::string const& filter_file,
                                     std::vector<kvmm::ThreadRole> const& roles) {
    if (no_seccomp) {
        if (!filter_file.empty())
            return kvmm::Error("--seccomp-filter and --no-seccomp contradict each other");
        spdlog::warn("--no-seccomp: kvmm runs without seccomp filters");
        return {};
    }
    if (kvmm::SANITIZED_BUILD) {
        spdlog::warn("sanitizer build: seccomp filters are not installed");
        return {};
    }
    auto const started = std::chrono::steady_clock::now();
    kvmm::prepare_sigsys_report();
    auto const report_ready = std::chrono::steady_clock::now();
    auto log_cost = [&] {
        auto const micros = [](auto duration) {
            return std::chrono::duration_cast<std::chrono::microseconds>(duration).count();
        };
        auto const now = std::chrono::steady_clock::now();
        spdlog::debug("seccomp: filters ready in {} us (violation report {} us, compiling {} us); BPF instructions: "
                      "vmm {}, vcpu {}, api {}, config_boot {}",
                      micros(now - started), micros(report_ready - started), micros(now - report_ready),
                      g_seccomp_filters->instruction_count(kvmm::ThreadRole::Vmm),
                      g_seccomp_filters->instruction_count(kvmm::ThreadRole::Vcpu),
                      g_seccomp_filters->instruction_count(kvmm::ThreadRole::Api),
                      g_seccomp_filters->instruction_count(kvmm::ThreadRole::ConfigBoot));
    };
    if (!filter_file.empty()) {
        auto const filters = TRY(kvmm::load_seccomp_filter_file(filter_file));
        g_seccomp_filters =
            TRY(kvmm::SeccompFilters::compile(filters).with_context(fmt::format("--seccomp-filter {}", filter_file)));
        return {};
    }
    namespace groups = kvmm::kvm_ioctl_groups;
    kvmm::KvmIoctls const kvm { groups::vcpu_run(),      groups::vcpu_diagnostics(), groups::interrupt_line(),
                                groups::device_wiring(), groups::save_state(),       groups::dirty_log() };
    g_seccomp_filters = TRY(kvmm::SeccompFilters::from_table(kvm, roles));
    log_cost();
    return {};
}

// The API server's options with its thread's sandbox.
kvmm::ApiServerOptions with_api_sandbox(kvmm::ApiServerOptions options) {
    options.on_thread_start = [] { enter_thread_role_or_exit(kvmm::ThreadRole::Api, "api"); };
    return options;
}

struct Flags {
    kvmm::VmConfig config;
    std::string initrd;
    std::string memory = "128M";
    std::string console = "stdio";
    bool huge_pages = false;
    std::vector<std::string> disks;
    std::vector<std::string> nets;
    std::string vsock;
    std::string balloon;
    std::string rng;
    std::string console_device = "serial";
};

// Turns the device and machine flags into `flags.config`.
kvmm::Expected<void> apply_flags(CLI::App const& app, Flags& flags) {
    auto& config = flags.config;
    if (!flags.initrd.empty())
        config.initrd_path = flags.initrd;
    config.memory_size = TRY(kvmm::parse_memory_size(flags.memory));
    config.console = TRY(kvmm::ConsoleConfig::parse(flags.console));
    config.transparent_huge_pages = flags.huge_pages;
    for (size_t i = 0; i < flags.disks.size(); ++i)
        config.disks.push_back(TRY(kvmm::parse_disk_option(flags.disks[i], i)));
    for (size_t i = 0; i < flags.nets.size(); ++i)
        config.nets.push_back(TRY(kvmm::parse_net_option(flags.nets[i], i)));
    if (app.count("--vsock"))
        config.vsock = TRY(kvmm::parse_vsock_option(flags.vsock));
    if (app.count("--balloon"))
        config.balloon = TRY(kvmm::parse_balloon_option(flags.balloon));
    if (app.count("--rng"))
        config.rng = TRY(kvmm::parse_rng_option(flags.rng == "on" ? "" : flags.rng));
    if (flags.console_device == "virtio")
        config.virtio_console = true;
    else if (flags.console_device != "serial")
        return kvmm::Error::format("invalid --console-device '{}': expected serial or virtio", flags.console_device);
    return {};
}

// Gives kvmm all the descriptors the host allows: every disk, TAP, vsock connection and API
// client holds one, and the usual soft limit of 1024 is far below the usual hard limit.
void raise_open_file_limit() {
    auto const limit = kvmm::raise_open_file_limit();
    if (!limit) {
        spdlog::warn("cannot raise the open-file limit: {}", limit.error().message());
        return;
    }
    spdlog::debug("open-file limit: soft {} raised to the hard limit {}", limit->previous_soft, limit->soft);
    if (limit->soft < kvmm::RECOMMENDED_OPEN_FILE_LIMIT)
        spdlog::warn("the open-file limit is only {} (hard limit; {} recommended): vsock connections, API "
                     "clients, disks and network interfaces share it, so a guest with many vsock connections "
                     "can exhaust it and new connections are then refused",
                     limit->soft, kvmm::RECOMMENDED_OPEN_FILE_LIMIT);
}

// The flags that name host files or sockets directly (the key=value flags check theirs while
// they are parsed): no control characters (base/path.h).
kvmm::Expected<void> check_flag_paths(std::initializer_list<std::pair<char const*, std::string const*>> flags) {
    for (auto const& [flag, value] : flags)
        TRY(kvmm::check_path_characters(*value, flag));
    return {};
}

// The machine of `kvmm --control-sock S --config-file F` (kvmmd's form): everything but the
// console from the file; the console and console device from the flags, as for flag mode.
kvmm::Expected<kvmm::VmConfig> load_machine_file(std::string const& path, kvmm::VmConfig const& flag_config) {
    auto const text = TRY(kvmm::read_file(path, MAX_CONFIG_FILE_SIZE));
    auto loaded = TRY(kvmm::load_config_file(std::string(reinterpret_cast<char const*>(text.data()), text.size()),
                                             kvmm::ConfigDialect::Kvmm));
    kvmm::VmConfig config = std::move(loaded.instance.vm);
    config.threads_per_core = loaded.instance.machine.smt ? 2 : 1;
    config.transparent_huge_pages = config.transparent_huge_pages || flag_config.transparent_huge_pages;
    config.console = flag_config.console;
    config.virtio_console = flag_config.virtio_console;
    return config;
}

int run_machine(kvmm::Machine& machine, kvmm::VmConfig const& config) {
    spdlog::info("VM started: {} vCPUs, {} MiB", config.vcpu_count, config.memory_size >> 20);
    auto const reason = machine.run();
    int const status = reason.exit_status();
    if (status == 0)
        spdlog::info("VM stopped: {} ({})", reason.cause_name(), reason.detail);
    else
        spdlog::error("VM stopped: {}: {}", reason.cause_name(), reason.detail);
    return status;
}

// Counts requests for the metrics, then lets the Firecracker API answer them.
class CountingHandler final : public kvmm::ApiHandler {
public:
    CountingHandler(kvmm::ApiHandler& inner, kvmm::VmmControl& control) : m_inner(inner), m_control(control) {}
    kvmm::HttpResponse handle(kvmm::HttpRequest const& request) override {
        m_control.count_request(request.method);
        return m_inner.handle(request);
    }

private:
    kvmm::ApiHandler& m_inner;
    kvmm::VmmControl& m_control;
};

// Firecracker's default API socket (its main.rs DEFAULT_API_SOCK_PATH), used when a config file
// is given without --api-sock or --no-api, as Firecracker does.
constexpr char const* DEFAULT_API_SOCKET = "/run/firecracker.socket";

struct ApiMode {
    std::string socket_path;
    std::string config_file;
    bool no_api = false;
    std::string id = "anonymous-instance";
    // Firecracker's logger and metrics flags, applied as PUT /logger and PUT /metrics would be.
    std::optional<kvmm::LoggerConfig> logger;
    std::string metrics_path;
    kvmm::ApiServerOptions server_options;
};

// Firecracker's --id rule (utils/src/validators.rs validate_instance_id: 1 to 64 characters,
// ASCII letters, digits and '-'), widened by '_' and '.', which kvmmd's VM names may contain.
kvmm::Expected<void> check_instance_id(std::string const& id) {
    if (id.empty() || id.size() > 64)
        return kvmm::Error::format("--id '{}' must be 1 to 64 characters long", id);
    for (char c : id) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
            return kvmm::Error::format("--id '{}' may contain only ASCII letters, digits, '-', '_' and '.'", id);
    }
    return {};
}

// Firecracker's level name for kvmm's --log-level, so that a bare --show-level keeps the level.
std::string firecracker_level_name(spdlog::level::level_enum level) {
    switch (level) {
    case spdlog::level::trace:
        return "Trace";
    case spdlog::level::debug:
        return "Debug";
    case spdlog::level::info:
        return "Info";
    case spdlog::level::warn:
        return "Warning";
    case spdlog::level::err:
    case spdlog::level::critical:
        return "Error";
    default:
        return "Off";
    }
}

// Serves the API on `path` unless a socket is bound there already: Firecracker refuses to start
// then ("Failed to open the API socket ... Check that it is not already used"), even when that
// socket does not listen. A socket file nobody has bound (left by a process that died) is
// replaced by the server.
kvmm::Expected<std::unique_ptr<kvmm::ApiServer>> start_api_server(std::string const& path, kvmm::ApiHandler& handler,
                                                                  kvmm::ApiServerOptions const& options) {
    TRY(kvmm::check_socket_path_unbound(path));
    return kvmm::ApiServer::start(path, handler, options);
}

// Applies the logger and metrics flags through the API object, so that they behave exactly
// as the requests would (and show in GET /vm/config).
kvmm::Expected<void> install_flag_observability(kvmm::FirecrackerApi& api, ApiMode const& mode) {
    if (mode.logger)
        TRY(api.install_logger(*mode.logger).with_context("--log-path"));
    if (!mode.metrics_path.empty())
        TRY(api.install_metrics(kvmm::MetricsConfig { mode.metrics_path }).with_context("--metrics-path"));
    return {};
}

// Firecracker mode: the VM comes from --config-file and/or the API; the main thread waits for
// InstanceStart, builds the machine, then runs it while the API thread keeps serving.
int run_api_mode(ApiMode const& mode) {
    // The stop signals are blocked in every thread (the API thread inherits the mask) and
    // polled while waiting; once the machine runs, its event loop reads them from a signalfd.
    sigset_t const stop_signals = kvmm::Machine::stop_signals();
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    int received_signal = 0;
    auto should_stop = [&] {
        timespec const no_wait {};
        int const signal_number = sigtimedwait(&stop_signals, nullptr, &no_wait);
        if (signal_number > 0)
            received_signal = signal_number;
        return received_signal != 0;
    };

    kvmm::VmmControl control;
    kvmm::FirecrackerApi api(control, kvmm::ApiIdentity { mode.id, KVMM_VERSION });
    CountingHandler handler(api, control);
    if (auto installed = install_flag_observability(api, mode); !installed)
        return fail(installed.error().message());

    // --config-file boots at once: its InstanceStart runs on a helper thread because it waits for
    // this (main) thread to build the machine. The API server starts after it, so the two never
    // use the API object at the same time.
    std::thread config_boot;
    kvmm::Expected<void> config_result {};
    if (!mode.config_file.empty()) {
        auto text = kvmm::read_file(mode.config_file, MAX_CONFIG_FILE_SIZE);
        if (!text)
            return fail(fmt::format("--config-file: {}", text.error().message()));
        auto parsed = kvmm::load_config_file(std::string(reinterpret_cast<char const*>(text->data()), text->size()));
        if (!parsed)
            return fail(fmt::format("--config-file {}: {}", mode.config_file, parsed.error().message()));
        config_boot = std::thread([&api, &config_result, config = std::move(*parsed)]() mutable {
            pthread_setname_np(pthread_self(), "config_boot");
            enter_thread_role_or_exit(kvmm::ThreadRole::ConfigBoot, "config_boot");
            config_result = api.boot_from_config(std::move(config));
        });
    }
    std::unique_ptr<kvmm::ApiServer> server;
    if (!mode.no_api && mode.config_file.empty()) {
        auto started = start_api_server(mode.socket_path, handler,
                                        control.api_server_options(with_api_sandbox(mode.server_options)));
        if (!started)
            return fail(fmt::format("--api-sock {}: {}", mode.socket_path, started.error().message()));
        server = std::move(*started);
        spdlog::info("API listening on {}", mode.socket_path);
    }

    std::unique_ptr<kvmm::Machine> machine;
    kvmm::VmConfig config;
    kvmm::KvmHypervisor hypervisor;
    while (!machine) {
        auto request = control.wait_for_start(should_stop);
        if (!request) {
            if (config_boot.joinable())
                config_boot.join();
            return 128 + received_signal;
        }
        config = std::move(request->config);
        auto built = request->restore ? kvmm::Machine::create_restored(config, hypervisor, std::move(*request->restore),
                                                                       sandbox_hooks())
                                      : kvmm::Machine::create(config, hypervisor, sandbox_hooks());
        control.machine_built(built);
        if (built)
            machine = std::move(*built);
        else
            spdlog::error("{} failed: {}", request->restore ? "snapshot load" : "InstanceStart",
                          built.error().message());
        if (config_boot.joinable()) {
            config_boot.join();
            if (!config_result)
                return fail(fmt::format("--config-file {}: {}", mode.config_file, config_result.error().message()));
        }
    }
    if (!mode.no_api && !server) { // with --config-file, the API starts once the VM is up
        auto started = start_api_server(mode.socket_path, handler,
                                        control.api_server_options(with_api_sandbox(mode.server_options)));
        if (!started)
            return fail(fmt::format("--api-sock {}: {}", mode.socket_path, started.error().message()));
        server = std::move(*started);
    }
    int const status = run_machine(*machine, config);
    control.machine_stopped();
    server.reset();
    return status;
}

// Flag mode with --control-sock: the VM comes from the flags and starts at once, and the same
// Firecracker-compatible API serves it while it runs (pause, resume, SendCtrlAltDel,
// FlushMetrics, GET /), so a manager can control a VM it started with flags. The socket
// appears only once the machine is built, so its presence means the VM is up.
// kvmmd's restore of a saved VM: the machine file's configuration, built from a snapshot's
// state and memory file instead of booted (Machine::create_restored checks that they fit).
struct RestoreFlags {
    std::string snapshot_path;
    std::string memory_path;
};

kvmm::Expected<std::unique_ptr<kvmm::Machine>> build_controlled_machine(kvmm::VmConfig const& config,
                                                                        kvmm::Hypervisor& hypervisor,
                                                                        std::optional<RestoreFlags> const& restore) {
    if (!restore)
        return kvmm::Machine::create(config, hypervisor, sandbox_hooks());
    auto file = TRY(kvmm::SnapshotFile::read(restore->snapshot_path).with_context("--restore-snapshot"));
    kvmm::RestoreSource source { std::move(file.machine_state), std::move(file.memory_layout), restore->memory_path,
                                 false };
    return kvmm::Machine::create_restored(config, hypervisor, std::move(source), sandbox_hooks());
}

int run_controlled_flag_mode(kvmm::VmConfig const& config, std::string const& control_socket,
                             std::string const& metrics_path, std::string const& id,
                             std::optional<RestoreFlags> const& restore = std::nullopt) {
    // As in run_api_mode: the API thread must not take the stop signals the event loop reads.
    sigset_t const stop_signals = kvmm::Machine::stop_signals();
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    kvmm::VmmControl control;
    kvmm::FirecrackerApi api(control, kvmm::ApiIdentity { id, KVMM_VERSION });
    CountingHandler handler(api, control);
    if (!metrics_path.empty()) {
        if (auto installed =
                api.install_metrics(kvmm::MetricsConfig { metrics_path }, kvmm::SinkCreation::CreateIfMissing);
            !installed)
            return fail(fmt::format("--metrics: {}", installed.error().message()));
    }
    kvmm::InstanceConfig instance { config, {} };
    instance.machine.track_dirty_pages = config.track_dirty_pages;
    api.mark_started(instance);
    kvmm::KvmHypervisor hypervisor;
    auto built = build_controlled_machine(config, hypervisor, restore);
    control.machine_built(built);
    if (!built)
        return fail(built.error().message());
    auto machine = std::move(*built);
    auto server = start_api_server(control_socket, handler, control.api_server_options(with_api_sandbox({})));
    if (!server)
        return fail(fmt::format("--control-sock {}: {}", control_socket, server.error().message()));
    spdlog::info("control API listening on {}", control_socket);
    int const status = run_machine(*machine, config);
    control.machine_stopped();
    server->reset();
    return status;
}

} // namespace

int main(int argc, char** argv) {
    // Tools that act on files and start no VM come first, as words before any flag.
    if (argc > 1 && std::string_view(argv[1]) == "snapshot-rebase")
        return kvmm::run_snapshot_rebase(argc - 1, argv + 1);
    CLI::App app { "kvmm - a KVM virtual machine monitor", "kvmm" };
    app.footer("Also: kvmm snapshot-rebase --base-memory FULL.mem --diff-memory DIFF.mem... applies Diff "
               "snapshots' memory files onto a Full one (see docs/api.md)");
    app.set_version_flag("--version", fmt::format("kvmm {}\nFirecracker API {} compatible", KVMM_VERSION,
                                                  kvmm::FIRECRACKER_API_VERSION));

    Flags flags;
    std::string log_level = "warn";
    ApiMode api_mode;
    app.add_option("--kernel", flags.config.kernel_path, "Kernel: bzImage, or ELF vmlinux with a PVH entry note");
    std::string firmware;
    app.add_option("--firmware", firmware,
                   "Firmware image (e.g. /usr/share/seabios/bios-microvm.bin): boot through it instead of a "
                   "kernel; with --kernel, the kernel is handed to the firmware over fw_cfg");
    app.add_option("--initrd", flags.initrd, "Initial ramdisk");
    app.add_option("--cmdline", flags.config.cmdline, "Kernel command line");
    app.add_option("--cpus", flags.config.vcpu_count, "Number of vCPUs")->default_val(1);
    app.add_option("--memory", flags.memory, "Guest RAM, e.g. 512M, 4G (plain number: MiB)")->default_val("128M");
    app.add_option("--console", flags.console, "Console: stdio, file=PATH, socket=PATH or none")->default_val("stdio");
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")->default_val("warn");
    app.add_flag("--huge-pages", flags.huge_pages, "Back guest RAM with transparent huge pages");
    app.add_option("--disk", flags.disks,
                   "virtio-blk disk: path=FILE[,id=ID][,readonly=on][,cache=writeback|writethrough]"
                   "[,engine=io_uring|sync][,format=raw|qcow2][,serial=S][,root=on][,bw=SIZE][,iops=N] (repeatable)");
    app.add_option("--net", flags.nets,
                   "virtio-net interface: tap=NAME|fd=N[,id=ID][,mac=MAC][,rx_bw=SIZE][,tx_bw=SIZE] (repeatable)");
    app.add_option("--vsock", flags.vsock, "virtio-vsock: cid=N,uds=PATH (Firecracker's hybrid Unix socket)");
    app.add_option("--balloon", flags.balloon,
                   "virtio-balloon: size=SIZE[,deflate_on_oom=on][,stats=SECONDS][,free_page_reporting=on]");
    app.add_option("--rng", flags.rng, "virtio entropy device; optional limit bw=SIZE (bytes per second)")
        ->expected(0, 1)
        ->default_str("on");
    app.add_option("--console-device", flags.console_device, "Console device: serial (ttyS0) or virtio (hvc0)")
        ->default_val("serial");
    app.add_option("--api-sock", api_mode.socket_path,
                   "Serve the Firecracker-compatible API on this Unix socket and wait for InstanceStart");
    app.add_option("--config-file", api_mode.config_file, "Boot from a Firecracker-style JSON configuration file");
    app.add_flag("--no-api", api_mode.no_api, "With --config-file: serve no API socket");
    app.add_option("--id", api_mode.id, "Instance id reported by GET /")->default_val("anonymous-instance");

    // Firecracker's other flags, so that its launchers (the Go SDK's, firectl, jailer setups)
    // run kvmm unchanged. docs/api.md lists which of them have no effect yet, and why.
    std::string fc_level;
    std::string fc_log_path;
    std::string fc_module;
    bool fc_show_level = false;
    bool fc_show_log_origin = false;
    bool no_seccomp = false;
    std::string seccomp_filter;
    bool boot_timer = false;
    uint64_t max_payload_size = 0;
    uint64_t mmds_size_limit = 0;
    uint64_t start_time_us = 0, start_time_cpu_us = 0, parent_cpu_time_us = 0;
    app.add_option("--log-path", fc_log_path, "Log to this existing file or FIFO instead of stderr (as PUT /logger)");
    app.add_option("--level", fc_level,
                   "Firecracker log level: Error, Warning, Info, Debug, Trace or Off (as PUT /logger)");
    app.add_option("--module", fc_module, "Log module filter (accepted; kvmm has no log modules, so no effect)");
    app.add_flag("--show-level", fc_show_level, "Show the level in --log-path lines");
    app.add_flag("--show-log-origin", fc_show_log_origin, "Show the source file and line in --log-path lines");
    app.add_option("--metrics-path", api_mode.metrics_path, "Metrics to this existing file or FIFO (as PUT /metrics)");
    app.add_flag("--no-seccomp", no_seccomp, "Run without seccomp filters (docs/security.md)");
    app.add_option("--seccomp-filter", seccomp_filter,
                   "Seccomp filters per thread role from this JSON file instead of kvmm's own (docs/security.md)");
    app.add_flag(
        "--boot-timer", boot_timer,
        "Accepted; no effect: kvmm's own boot marker (port 0x440) is always on; Firecracker's is not emulated");
    app.add_option("--http-api-max-payload-size", max_payload_size, "Largest API request body in bytes")
        ->default_val(51200);
    app.add_option("--mmds-size-limit", mmds_size_limit, "Accepted; no effect: kvmm has no MMDS yet");
    app.add_option("--start-time-us", start_time_us, "Accepted; no effect (Firecracker's boot-time metrics)");
    app.add_option("--start-time-cpu-us", start_time_cpu_us, "Accepted; no effect (Firecracker's boot-time metrics)");
    app.add_option("--parent-cpu-time-us", parent_cpu_time_us, "Accepted; no effect (Firecracker's boot-time metrics)");
    std::string control_socket;
    std::string metrics_path;
    app.add_option("--control-sock", control_socket,
                   "With --kernel, or with --config-file for kvmmd's machine files: also serve the "
                   "Firecracker-compatible API on this Unix socket while the VM runs");
    app.add_option("--metrics", metrics_path,
                   "With --control-sock: metrics destination (file or FIFO), as PUT /metrics would set");
    RestoreFlags restore_flags;
    app.add_option("--restore-snapshot", restore_flags.snapshot_path,
                   "With --config-file and --control-sock (kvmmd's form): restore the machine from this snapshot "
                   "file instead of booting it");
    app.add_option("--restore-memory", restore_flags.memory_path,
                   "The memory file of --restore-snapshot (mapped privately: File backend)");

    try {
        app.parse(argc, argv);
    } catch (CLI::CallForHelp const& e) {
        return app.exit(e);
    } catch (CLI::CallForVersion const& e) {
        return app.exit(e);
    } catch (CLI::ParseError const& e) {
        return fail(e.what());
    }

    auto level = kvmm::parse_log_level(log_level);
    if (!level)
        return fail(level.error().message());
    kvmm::init_logging(*level);
    if (app.count("--level") || app.count("--log-path") || fc_show_level || fc_show_log_origin ||
        app.count("--module")) {
        nlohmann::json logger_body = nlohmann::json::object();
        if (app.count("--log-path"))
            logger_body["log_path"] = fc_log_path;
        if (app.count("--level"))
            logger_body["level"] = fc_level;
        if (app.count("--module"))
            logger_body["module"] = fc_module;
        logger_body["show_level"] = fc_show_level;
        logger_body["show_log_origin"] = fc_show_log_origin;
        auto logger = kvmm::parse_logger(logger_body);
        if (!logger)
            return fail(logger.error().message());
        // Firecracker's default level is Info, but only where its logger is configured; a bare
        // --show-level keeps kvmm's --log-level.
        if (!app.count("--level") && !app.count("--log-path"))
            logger->level = firecracker_level_name(*level);
        api_mode.logger = std::move(*logger);
    }
    if (auto checked = check_instance_id(api_mode.id); !checked)
        return fail(checked.error().message());
    if (max_payload_size == 0)
        return fail("--http-api-max-payload-size must be at least 1 byte");
    api_mode.server_options.limits.max_body_bytes = max_payload_size;
    if (auto checked = check_flag_paths({ { "--kernel", &flags.config.kernel_path },
                                          { "--firmware", &firmware },
                                          { "--initrd", &flags.initrd },
                                          { "--api-sock", &api_mode.socket_path },
                                          { "--config-file", &api_mode.config_file },
                                          { "--control-sock", &control_socket },
                                          { "--metrics", &metrics_path },
                                          { "--restore-snapshot", &restore_flags.snapshot_path },
                                          { "--restore-memory", &restore_flags.memory_path },
                                          { "--log-path", &fc_log_path },
                                          { "--metrics-path", &api_mode.metrics_path },
                                          { "--seccomp-filter", &seccomp_filter } });
        !checked)
        return fail(checked.error().message());
    // Only the roles this process will have are compiled (each costs start-up time).
    std::vector<kvmm::ThreadRole> roles { kvmm::ThreadRole::Vmm, kvmm::ThreadRole::Vcpu };
    if (!api_mode.socket_path.empty() || !control_socket.empty() || (!api_mode.config_file.empty() && !api_mode.no_api))
        roles.push_back(kvmm::ThreadRole::Api);
    // kvmmd's machine files (--config-file with --control-sock) are applied on the main thread.
    if (!api_mode.config_file.empty() && control_socket.empty())
        roles.push_back(kvmm::ThreadRole::ConfigBoot);
    if (auto prepared = prepare_seccomp(no_seccomp, seccomp_filter, roles); !prepared)
        return fail(prepared.error().message());
    raise_open_file_limit();

    // kvmmd's form: the whole machine from a file in kvmm's dialect of the config-file format
    // (config/microvm_config.h), the control API and the console as flags.
    bool const machine_file_mode =
        !control_socket.empty() && !api_mode.config_file.empty() && api_mode.socket_path.empty();
    bool const firecracker_mode =
        (!api_mode.socket_path.empty() || !api_mode.config_file.empty()) && !machine_file_mode;
    bool const restoring = !restore_flags.snapshot_path.empty() || !restore_flags.memory_path.empty();
    if (restoring && (!machine_file_mode || restore_flags.snapshot_path.empty() || restore_flags.memory_path.empty()))
        return fail("--restore-snapshot and --restore-memory go together, with --config-file and --control-sock "
                    "(kvmmd's form; with --api-sock use PUT /snapshot/load)");
    if (firecracker_mode) {
        if (!flags.config.kernel_path.empty() || !firmware.empty() || !flags.disks.empty() || !flags.nets.empty())
            return fail(
                "--kernel, --firmware, --disk and --net cannot be combined with --api-sock or --config-file: the VM "
                "is configured through the API or the config file");
        if (api_mode.no_api && api_mode.config_file.empty())
            return fail("--no-api needs --config-file (otherwise nothing could configure the VM)");
        if (!api_mode.no_api && api_mode.socket_path.empty())
            api_mode.socket_path = DEFAULT_API_SOCKET;
        if (!control_socket.empty())
            return fail("--control-sock is for flag mode (--kernel); with --api-sock the API already controls the VM");
        return run_api_mode(api_mode);
    }
    if (!metrics_path.empty() && control_socket.empty())
        return fail("--metrics needs --control-sock (FlushMetrics comes through the control API)");
    if (api_mode.logger || !api_mode.metrics_path.empty())
        return fail("--log-path, --level, --show-level, --show-log-origin, --module and --metrics-path are "
                    "Firecracker's flags: use them with --api-sock or --config-file (with --kernel, use "
                    "--log-level, and --metrics with --control-sock)");
    if (machine_file_mode) {
        for (char const* flag : { "--kernel", "--firmware", "--initrd", "--cmdline", "--cpus", "--memory", "--disk",
                                  "--net", "--vsock", "--balloon", "--rng" }) {
            if (app.count(flag))
                return fail(fmt::format("{} cannot be combined with --config-file and --control-sock: the file "
                                        "describes the whole machine",
                                        flag));
        }
        if (auto applied = apply_flags(app, flags); !applied)
            return fail(applied.error().message());
        auto machine = load_machine_file(api_mode.config_file, flags.config);
        if (!machine)
            return fail(fmt::format("--config-file {}: {}", api_mode.config_file, machine.error().message()));
        return run_controlled_flag_mode(*machine, control_socket, metrics_path, api_mode.id,
                                        restoring ? std::optional(restore_flags) : std::nullopt);
    }
    if (app.count("--firmware"))
        flags.config.firmware_path = firmware;
    if (flags.config.kernel_path.empty() && !flags.config.firmware_path)
        return fail("no kernel given: use --kernel PATH, --firmware PATH (or --api-sock PATH to configure the VM "
                    "through the API)");
    if (auto applied = apply_flags(app, flags); !applied)
        return fail(applied.error().message());
    if (!control_socket.empty())
        return run_controlled_flag_mode(flags.config, control_socket, metrics_path, api_mode.id);
    kvmm::KvmHypervisor hypervisor;
    auto machine = kvmm::Machine::create(flags.config, hypervisor, sandbox_hooks());
    if (!machine)
        return fail(machine.error().message());
    return run_machine(**machine, flags.config);
}

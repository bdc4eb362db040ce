// kvmmd: the VM manager daemon. Keeps VM definitions in --state-dir, runs one kvmm per running
// VM, and serves kvmmctl on --socket (newline-delimited JSON, manager/protocol.h).
//
// SIGTERM, SIGINT and SIGHUP stop the daemon but not the VMs: a new kvmmd re-attaches to them.
// Exit status: 0 after such a stop, 1 when it cannot start (bad options, state dir, socket).
#include "base/logging.h"
#include "manager/daemon.h"
#include "manager/daemon_server.h"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <grp.h>
#include <string>
#include <thread>
#include <unistd.h>

namespace {

int fail(std::string const& message) {
    std::fprintf(stderr, "kvmmd: error: %s\n", message.c_str());
    return 1;
}

// A program installed beside kvmmd (the same bin directory, or the build tree's src/cli).
std::string beside_self(char const* name) {
    char path[PATH_MAX];
    ssize_t const length = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
    if (length <= 0)
        return std::string("/usr/bin/") + name;
    return (std::filesystem::path(std::string(path, static_cast<size_t>(length))).parent_path() / name).string();
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app { "kvmmd - the kvmm VM manager daemon", "kvmmd" };
    kvmm::DaemonOptions options;
    std::string state_dir = "/var/lib/kvmm";
    std::string socket_path;
    std::string log_level = "info";
    kvmm::DaemonServerOptions server_options;
    double request_timeout_s = 10, idle_timeout_s = 60;
    app.add_option("--state-dir", state_dir, "Definitions, runtime state and logs")->default_val("/var/lib/kvmm");
    app.add_option("--socket", socket_path, "Control socket (default: STATE_DIR/kvmmd.sock)");
    app.add_option("--kvmm", options.kvmm_binary, "The kvmm program (default: kvmm beside kvmmd)");
    app.add_option("--cgroup-parent", options.cgroup_parent, "Parent of the VMs' cgroups")->default_val("kvmm");
    std::string uid_range = "1879048192:65536";
    std::string jailer_binary, jail_base, socket_group = "kvmm";
    bool no_jail = false;
    app.add_option("--vm-uid-range", uid_range,
                   "START:COUNT: each VM runs jailed under its own uid (and gid) from this range")
        ->default_val("1879048192:65536");
    app.add_option("--jailer", jailer_binary, "The kvmm-jailer program (default: kvmm-jailer beside kvmmd)");
    app.add_option("--jail-base", jail_base,
                   "kvmm-jailer's chroot base; VM files are hard-linked into it (default: STATE_DIR/jail)");
    app.add_flag("--no-jail", no_jail, "Run every kvmm as root, unjailed (development only)");
    app.add_option("--socket-group", socket_group, "Group allowed to use the control and console sockets (mode 0660)")
        ->default_val("kvmm");
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")->default_val("info");
    app.add_option("--max-clients", server_options.max_clients,
                   "Most connections served at once; at the limit the longest-waiting idle one makes room")
        ->default_val(256)
        ->check(CLI::Range(size_t { 1 }, size_t { 65536 }));
    app.add_option("--request-timeout", request_timeout_s,
                   "Seconds within which a request line must arrive whole, and its answer be read")
        ->default_val(10)
        ->check(CLI::Range(0.001, 3600.0));
    app.add_option("--idle-timeout", idle_timeout_s, "Seconds after which a connection without a request is closed")
        ->default_val(60)
        ->check(CLI::Range(0.001, 86400.0));
    try {
        app.parse(argc, argv);
    } catch (CLI::CallForHelp const& e) {
        return app.exit(e);
    } catch (CLI::ParseError const& e) {
        return fail(e.what());
    }
    auto level = kvmm::parse_log_level(log_level);
    if (!level)
        return fail(level.error().message());
    kvmm::init_logging(*level);

    options.state_dir = std::filesystem::absolute(state_dir);
    if (options.kvmm_binary.empty())
        options.kvmm_binary = beside_self("kvmm");
    options.kvmm_binary = std::filesystem::absolute(options.kvmm_binary).string();
    if (socket_path.empty())
        socket_path = (options.state_dir / "kvmmd.sock").string();
    if (!no_jail) {
        auto range = kvmm::parse_uid_range(uid_range);
        if (!range)
            return fail(fmt::format("--vm-uid-range: {}", range.error().message()));
        kvmm::JailSettings jail;
        jail.jailer_binary = jailer_binary.empty() ? beside_self("kvmm-jailer") : jailer_binary;
        jail.jailer_binary = std::filesystem::absolute(jail.jailer_binary).string();
        jail.base = jail_base.empty() ? options.state_dir / "jail" : std::filesystem::absolute(jail_base);
        jail.uid_start = range->first;
        jail.uid_count = range->second;
        options.jail = jail;
    } else {
        spdlog::warn("kvmmd: --no-jail: every kvmm runs as root with all capabilities and the host's file system");
    }
    // The group is the packager's to create (as libvirt's is): kvmmd edits no account database.
    // The default one missing leaves the sockets to root; a named one missing is an error.
    if (auto* group = ::getgrnam(socket_group.c_str()))
        options.socket_group = group->gr_gid;
    else if (app.count("--socket-group") > 0)
        return fail(fmt::format("--socket-group: no group '{}'", socket_group));
    else
        spdlog::warn("kvmmd: no group '{}': the control and console sockets are root's alone", socket_group);

    // Signals are taken synchronously by the main thread; every other thread inherits the mask.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    for (int signal_number : { SIGINT, SIGTERM, SIGHUP })
        sigaddset(&stop_signals, signal_number);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    auto daemon = kvmm::Daemon::create(options);
    if (!daemon)
        return fail(daemon.error().message());
    auto const milliseconds = [](double seconds) {
        return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0 + 0.5));
    };
    server_options.request_timeout = milliseconds(request_timeout_s);
    server_options.idle_timeout = milliseconds(idle_timeout_s);
    auto server = kvmm::DaemonServer::start(socket_path, **daemon, server_options);
    if (!server)
        return fail(server.error().message());
    if (options.socket_group && ::chown(socket_path.c_str(), 0, *options.socket_group) != 0)
        return fail(fmt::format("cannot give '{}' to group '{}': {}", socket_path, socket_group, std::strerror(errno)));
    spdlog::info("kvmmd serving {} (state in {}, kvmm {})", socket_path, options.state_dir.string(),
                 options.kvmm_binary);
    std::thread autostart([&] { (*daemon)->start_autostart_vms(); });

    int signal_number = 0;
    while (sigwait(&stop_signals, &signal_number) != 0) {
    }
    spdlog::info("kvmmd stopping on {}; VMs keep running", strsignal(signal_number));
    autostart.join();
    (*server)->stop();
    server->reset();
    daemon->reset();
    return 0;
}

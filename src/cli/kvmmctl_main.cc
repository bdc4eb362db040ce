// kvmmctl: the administrator's command line for kvmmd, with virsh's verbs.
//   kvmmctl [--socket PATH] VERB ...   (docs/kvmmctl.md)
// Every verb takes --json for scripts. Errors print one line "kvmmctl: error: ..." and exit 1.
// kvmmctl never waits for ever: connecting and each answer are bounded by --daemon-timeout (plus the
// time the verb itself may take inside kvmmd, e.g. shutdown's own timeout); a daemon that does
// not answer is an error naming its socket. An attached console has no time limit.
#include "manager/protocol.h"
#include "manager/terminal_filter.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <poll.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

namespace {

using nlohmann::json;

struct CommandError {
    std::string message;
};

[[noreturn]] void fail(std::string message) { throw CommandError { std::move(message) }; }

template <typename T>
T unwrap(kvmm::Expected<T> result) {
    if (!result)
        fail(result.error().message());
    return std::move(*result);
}

// How long kvmmctl waits: `answer` for kvmmd to accept and to answer, plus `verb` for what the
// verb may take inside kvmmd. No value: no limit (--daemon-timeout 0).
struct Timeouts {
    std::optional<std::chrono::milliseconds> answer;
    std::chrono::milliseconds verb { 0 };

    std::optional<std::chrono::milliseconds> for_call() const {
        if (!answer)
            return std::nullopt;
        return *answer + verb;
    }
};

// kvmmd's own bounds on a verb (daemon.cc, daemon_process.cc), so that kvmmctl reports kvmmd's
// error rather than giving up first. A start waits up to 15 s for kvmm's control socket, then
// stops kvmm (1 s for SIGTERM, up to 10 s after SIGKILL), and pins vCPUs for up to about 2 s:
// 28 s. Destroy allows 5 s for SIGTERM and 10 s after SIGKILL; reboot is a destroy and a start.
// Each request kvmmd makes to kvmm (KvmmClient) may take its 5 s to connect and 5 s to answer;
// shutdown makes up to two (resume, Ctrl+Alt+Del), waits for the guest for its timeout, then
// destroys. The other verbs do not wait for a kvmm to stop or start and are bounded by
// --daemon-timeout alone; metrics, which asks every running kvmm to flush its metrics, can take
// longer while a kvmm does not answer.
std::chrono::milliseconds verb_duration(std::string const& verb, uint64_t shutdown_timeout_s) {
    using std::chrono::seconds;
    constexpr seconds START { 30 };
    constexpr seconds DESTROY { 15 };
    constexpr seconds KVMM_REQUEST { 10 };
    if (verb == "start")
        return START;
    if (verb == "destroy")
        return DESTROY;
    if (verb == "reboot")
        return DESTROY + START;
    if (verb == "shutdown")
        return seconds(shutdown_timeout_s) + 2 * KVMM_REQUEST + DESTROY;
    if (verb == "suspend" || verb == "resume")
        return KVMM_REQUEST;
    // Pause, the snapshot (kvmmd allows it 120 s), then resume or stop.
    constexpr seconds SNAPSHOT { 120 };
    if (verb == "save")
        return 2 * KVMM_REQUEST + SNAPSHOT + DESTROY;
    if (verb == "snapshot")
        return 2 * KVMM_REQUEST + SNAPSHOT;
    if (verb == "restore")
        return START;
    return seconds(0);
}

json call(std::string const& socket_path, Timeouts const& timeouts, json request) {
    auto client = kvmm::DaemonClient::connect(socket_path, timeouts.answer);
    if (!client) {
        if (client.error().error_number() == ETIMEDOUT)
            fail(fmt::format("kvmmd at '{}' does not accept connections: no answer within {} ms (is it stuck? "
                             "--daemon-timeout sets how long to wait)",
                             socket_path, timeouts.answer->count()));
        fail(fmt::format("cannot reach kvmmd at '{}': {}", socket_path, client.error().message()));
    }
    auto answer = client->call(request, timeouts.for_call());
    if (!answer && answer.error().error_number() == ETIMEDOUT)
        fail(fmt::format(
            "kvmmd at '{}' did not answer within {} ms (is it stuck? --daemon-timeout sets how long to wait)",
            socket_path, timeouts.for_call()->count()));
    return unwrap(std::move(answer));
}

std::string read_text_file(std::string const& path) {
    std::ifstream file(path);
    if (!file)
        fail(fmt::format("cannot read '{}'", path));
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

std::string format_optional(json const& value, std::string_view unit = {}) {
    if (value.is_null())
        return "-";
    if (value.is_number_float())
        return fmt::format("{:.1f}{}", value.get<double>(), unit);
    return value.dump() + std::string(unit);
}

void print_list(json const& answer) {
    std::printf(" %-8s %-32s %s\n", "Id", "Name", "State");
    std::printf("%s\n", std::string(54, '-').c_str());
    for (auto const& vm : answer["vms"]) {
        std::string const id = vm["pid"].is_null() ? "-" : vm["pid"].dump();
        std::printf(" %-8s %-32s %s\n", id.c_str(), vm["name"].get<std::string>().c_str(),
                    vm["state"].get<std::string>().c_str());
    }
}

void print_info(json const& vm) {
    auto row = [](char const* key, std::string const& value) { std::printf("%-16s %s\n", key, value.c_str()); };
    row("Name:", vm["name"].get<std::string>());
    row("State:", vm["state"].get<std::string>());
    row("PID:", format_optional(vm["pid"]));
    row("vCPUs:", vm["vcpus"].dump());
    row("Memory:", fmt::format("{} MiB", vm["memory_mib"].get<uint64_t>()));
    row("Uptime:", format_optional(vm["uptime_s"], " s"));
    row("CPU time:", vm["cpu_time_ns"].is_null()
                         ? "-"
                         : fmt::format("{:.3f} s", static_cast<double>(vm["cpu_time_ns"].get<uint64_t>()) / 1e9));
    row("RSS:", vm["memory_bytes"].is_null() ? "-" : fmt::format("{} KiB", vm["memory_bytes"].get<uint64_t>() / 1024));
    row("Autostart:", vm["autostart"].get<bool>() ? "enable" : "disable");
    row("Restart:", vm["restart"].get<std::string>());
    if (vm.contains("last_exit"))
        row("Last exit:", vm["last_exit"]["reason"].get<std::string>());
}

// Sizes as virsh vol-info prints them: "10.00 GiB".
std::string human_size(uint64_t bytes) {
    static constexpr char const* UNITS[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double value = static_cast<double>(bytes);
    size_t unit = 0;
    while (value >= 1024 && unit + 1 < std::size(UNITS)) {
        value /= 1024;
        ++unit;
    }
    return unit == 0 ? fmt::format("{} bytes", bytes) : fmt::format("{:.2f} {}", value, UNITS[unit]);
}

std::string format_name(json const& volume) {
    std::string name = volume["format"].get<std::string>();
    return volume["format_recorded"].get<bool>() ? name : name + " (detected)";
}

void print_volume_list(json const& answer) {
    std::printf(" %-24s %-16s %12s %12s  %s\n", "Name", "Format", "Capacity", "Allocation", "Backing file");
    std::printf("%s\n", std::string(90, '-').c_str());
    for (auto const& volume : answer["volumes"]) {
        auto const name = volume["name"].get<std::string>();
        if (volume.contains("error")) {
            std::printf(" %-24s (unreadable: %s)\n", name.c_str(), volume["error"].get<std::string>().c_str());
            continue;
        }
        std::string const backing = volume["backing_file"].is_null() ? "-" : volume["backing_file"].get<std::string>();
        std::printf(" %-24s %-16s %12s %12s  %s\n", name.c_str(), format_name(volume).c_str(),
                    human_size(volume["capacity"].get<uint64_t>()).c_str(),
                    human_size(volume["allocation"].get<uint64_t>()).c_str(), backing.c_str());
    }
}

void print_volume_info(json const& volume) {
    auto row = [](char const* key, std::string const& value) { std::printf("%-16s %s\n", key, value.c_str()); };
    row("Name:", volume["name"].get<std::string>());
    row("Path:", volume["path"].get<std::string>());
    row("Format:", format_name(volume));
    row("Capacity:", human_size(volume["capacity"].get<uint64_t>()));
    row("Allocation:", human_size(volume["allocation"].get<uint64_t>()));
    if (!volume["backing_file"].is_null())
        row("Backing file:", fmt::format("{} ({})", volume["backing_file"].get<std::string>(),
                                         volume["backing_format"].get<std::string>()));
    std::string used;
    for (auto const& use : volume["used_by"])
        used += fmt::format("{}VM '{}' disk '{}'", used.empty() ? "" : ", ", use["vm"].get<std::string>(),
                            use["disk"].get<std::string>());
    row("Used by:", used.empty() ? "-" : used);
}

// Attaches the terminal to the VM's console socket, both directions, until Ctrl-] (0x1d, as
// virsh console) or the VM goes away. kvmm sends its recent output first (ConsoleServer), so
// the screen continues without a gap; the daemon's own scrollback is not needed here.
// Writes all of `text` to stdout (a terminal in raw mode may take it in parts); false when
// stdout has gone.
bool write_to_stdout(std::string_view text) {
    while (!text.empty()) {
        ssize_t const written = ::write(STDOUT_FILENO, text.data(), text.size());
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return false;
        text.remove_prefix(static_cast<size_t>(written));
    }
    return true;
}

// Guest output reaches the terminal through a TerminalFilter (Console mode) unless --raw: the
// guest must not be able to retitle, write the clipboard of, or type into the administrator's
// terminal. On detach the terminal states the filter lets through are undone.
void attach_console(json const& answer, Timeouts const& timeouts, bool raw_output) {
    constexpr char DETACH = 0x1d;
    auto const socket = answer["console_socket"].get<std::string>();
    auto fd = unwrap(timeouts.answer ? kvmm::connect_unix_socket(socket, *timeouts.answer)
                                     : kvmm::connect_unix_socket(socket));
    std::fprintf(stderr, "Connected to VM '%s' (escape character is ^])\n", answer["name"].get<std::string>().c_str());
    termios saved {};
    bool const terminal = ::isatty(STDIN_FILENO) && ::tcgetattr(STDIN_FILENO, &saved) == 0;
    if (terminal) {
        termios raw = saved;
        ::cfmakeraw(&raw);
        ::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    bool stdin_open = true;
    kvmm::TerminalFilter filter(kvmm::TerminalFilter::Mode::Console);
    while (true) {
        pollfd fds[2] = { { fd.get(), POLLIN, 0 }, { stdin_open ? STDIN_FILENO : -1, POLLIN, 0 } };
        if (::poll(fds, 2, -1) < 0 && errno != EINTR)
            break;
        char buffer[4096];
        if (fds[0].revents) {
            ssize_t const received = ::recv(fd.get(), buffer, sizeof(buffer), 0);
            if (received <= 0)
                break;
            std::string_view const output(buffer, static_cast<size_t>(received));
            if (raw_output) {
                (void)write_to_stdout(output);
            } else {
                (void)write_to_stdout(filter.feed(output));
            }
        }
        if (fds[1].revents) {
            ssize_t const count = ::read(STDIN_FILENO, buffer, sizeof(buffer));
            if (count <= 0) {
                stdin_open = false;
                continue;
            }
            std::string_view input(buffer, static_cast<size_t>(count));
            size_t const detach = input.find(DETACH);
            if (detach != std::string_view::npos) {
                (void)kvmm::send_all(fd.get(), input.substr(0, detach));
                break;
            }
            if (!kvmm::send_all(fd.get(), input))
                break;
        }
    }
    if (!raw_output) {
        (void)write_to_stdout(filter.finish());
        (void)write_to_stdout(kvmm::TerminalFilter::reset_sequence());
    }
    if (terminal)
        ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    // Said by kvmmctl, after the guest's last byte: whatever the guest drew (a prompt of the
    // host's shell, say), the session has ended here.
    std::fprintf(stderr, "\nDisconnected from VM '%s'\n", answer["name"].get<std::string>().c_str());
}

// Opens $EDITOR (or vi) on a temporary copy; the daemon validates the result. On an invalid
// definition the user may edit again or give up, and nothing changes.
void edit(std::string const& socket_path, Timeouts const& timeouts, std::string const& name, bool json_output) {
    auto current = call(socket_path, timeouts, { { "verb", "dump" }, { "name", name } });
    char path[] = "/tmp/kvmmctl-edit-XXXXXX.toml";
    int const fd = ::mkstemps(path, 5);
    if (fd < 0)
        fail("cannot create a temporary file");
    std::string text = current["toml"].get<std::string>();
    (void)!::write(fd, text.data(), text.size());
    ::close(fd);
    struct Remove {
        char const* path;
        ~Remove() { ::unlink(path); }
    } remove { path };
    char const* editor = std::getenv("EDITOR");
    std::string const command = fmt::format("{} '{}'", editor && *editor ? editor : "vi", path);
    while (true) {
        int const status = std::system(command.c_str());
        if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail(fmt::format("the editor failed ({}); nothing changed", command));
        std::string const edited = read_text_file(path);
        if (edited == text) {
            std::printf("VM '%s' unchanged\n", name.c_str());
            return;
        }
        auto client = kvmm::DaemonClient::connect(socket_path, timeouts.answer);
        if (!client)
            fail(fmt::format("cannot reach kvmmd at '{}': {}", socket_path, client.error().message()));
        auto answer = client->call({ { "verb", "edit" }, { "name", name }, { "toml", edited } }, timeouts.for_call());
        if (answer) {
            if (json_output)
                std::printf("%s\n", answer->dump().c_str());
            else
                std::printf("VM '%s' definition updated\n", name.c_str());
            return;
        }
        std::fprintf(stderr, "kvmmctl: error: %s\nEdit again? [y/N] ", answer.error().message().c_str());
        std::string reply;
        if (!::isatty(STDIN_FILENO) || !std::getline(std::cin, reply) || (reply != "y" && reply != "Y"))
            fail("edit aborted; nothing changed");
        text = edited;
    }
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app { "kvmmctl - manage kvmm VMs through kvmmd", "kvmmctl" };
    app.require_subcommand(1);
    std::string socket_path = "/var/lib/kvmm/kvmmd.sock";
    bool json_output = false;
    app.add_option("--socket", socket_path, "kvmmd's socket")->default_val("/var/lib/kvmm/kvmmd.sock");
    app.add_flag("--json", json_output, "Print the daemon's JSON answer");
    double timeout_seconds = 10;
    app.add_option("--daemon-timeout", timeout_seconds,
                   "Seconds to wait for kvmmd to accept and to answer, beyond the verb's own time (0: no limit)")
        ->default_val(10)
        ->check(CLI::Range(0.0, 86400.0));

    std::string name, file, on_off, new_name, size, backing, volume_format = "qcow2", snapshot_name;
    uint64_t timeout_s = 30, lines = 50;
    bool all = false;
    bool raw_output = false;
    auto add = [&](char const* verb, char const* help) {
        auto* command = app.add_subcommand(verb, help);
        command->add_flag("--json", json_output, "Print the daemon's JSON answer");
        return command;
    };
    add("define", "Define a VM from a TOML file")->add_option("FILE", file)->required();
    for (char const* verb : { "undefine", "start", "destroy", "reboot", "suspend", "resume", "edit" })
        add(verb, verb)->add_option("NAME", name)->required();
    auto* save = add("save", "Save the VM to FILE (and FILE.mem) and stop it; start or restore brings it back");
    save->add_option("NAME", name)->required();
    save->add_option("FILE", file, "The snapshot file to write")->required();
    add("restore", "Start a saved VM from its saved state")->add_option("NAME", name)->required();
    auto* snapshot = add("snapshot", "Snapshot the VM into kvmmd's state directory; it keeps running");
    snapshot->add_option("NAME", name)->required();
    snapshot->add_option("SNAPSHOT", snapshot_name, "The snapshot's name")->required();
    auto* shutdown = add("shutdown", "Ask the guest to power off (Ctrl+Alt+Del); destroy after --timeout");
    shutdown->add_option("NAME", name)->required();
    shutdown->add_option("--timeout", timeout_s, "Seconds before destroying")->default_val(30);
    add("list", "List running VMs (--all: every defined VM)")->add_flag("--all", all, "Include inactive VMs");
    add("info", "Show a VM's state and resource usage")->add_option("NAME", name)->required();
    auto* autostart = add("autostart", "Start the VM when kvmmd starts");
    autostart->add_option("NAME", name)->required();
    autostart->add_option("STATE", on_off, "on or off")->required()->check(CLI::IsMember({ "on", "off" }));
    auto* console = add("console", "Attach the terminal to a VM's console (Ctrl-] detaches)");
    console->add_option("NAME", name)->required();
    console->add_flag("--raw", raw_output, "Pass the guest's escape sequences to the terminal unfiltered");
    auto* logs = add("logs", "Show the end of a VM's console log");
    logs->add_option("NAME", name)->required();
    logs->add_flag("--raw", raw_output, "Print the log's bytes unfiltered");
    logs->add_option("--lines", lines, "How many lines")->default_val(50);
    add("metrics", "Print the Prometheus metrics text");
    // Volumes in kvmmd's storage directory (STATE_DIR/volumes), virsh's vol verbs.
    auto* vol_create = add("vol-create", "Create a volume (qcow2 by default; --backing: a thin overlay)");
    vol_create->add_option("NAME", name)->required();
    vol_create->add_option("SIZE", size, "e.g. 10G (bytes without a suffix); with --backing, the base's size");
    vol_create->add_option("--backing", backing, "A volume the new one is an overlay of");
    vol_create->add_option("--format", volume_format, "qcow2 or raw")->check(CLI::IsMember({ "qcow2", "raw" }));
    add("vol-list", "List the volumes");
    add("vol-info", "Show a volume's format, sizes, backing file and users")->add_option("NAME", name)->required();
    add("vol-delete", "Delete a volume that no VM and no other volume uses")->add_option("NAME", name)->required();
    auto* clone = add("clone", "Define NEW with thin qcow2 overlays of VM's disks (VM must be shut off)");
    clone->add_option("VM", name)->required();
    clone->add_option("NEW", new_name)->required();

    try {
        app.parse(argc, argv);
    } catch (CLI::CallForHelp const& e) {
        return app.exit(e);
    } catch (CLI::ParseError const& e) {
        std::fprintf(stderr, "kvmmctl: error: %s\n", e.what());
        return 1;
    }

    try {
        std::string const verb = app.get_subcommands().front()->get_name();
        json request { { "verb", verb } };
        if (verb == "define")
            request["toml"] = read_text_file(file);
        else if (!name.empty())
            request["name"] = name;
        if (verb == "shutdown")
            request["timeout_s"] = timeout_s;
        if (verb == "list")
            request["all"] = all;
        if (verb == "autostart")
            request["enabled"] = on_off == "on";
        if (verb == "logs")
            request["lines"] = lines;
        if (verb == "clone")
            request["new_name"] = new_name;
        if (verb == "vol-create") {
            request["format"] = volume_format;
            if (!size.empty())
                request["size"] = size;
            if (!backing.empty())
                request["backing"] = backing;
        }
        if (verb == "save") // kvmm writes it, elsewhere: the path as this shell means it
            request["file"] = std::filesystem::absolute(file).lexically_normal().string();
        if (verb == "snapshot")
            request["snapshot"] = snapshot_name;
        Timeouts timeouts;
        if (timeout_seconds > 0)
            timeouts.answer = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000.0 + 0.5));
        timeouts.verb = verb_duration(verb, timeout_s);
        if (verb == "edit") {
            edit(socket_path, timeouts, name, json_output);
            return 0;
        }
        auto answer = call(socket_path, timeouts, request);
        answer.erase("ok");
        if (verb == "console") {
            attach_console(answer, timeouts, raw_output);
            return 0;
        }
        if (json_output) {
            std::printf("%s\n", answer.dump(2).c_str());
            return 0;
        }
        if (verb == "list")
            print_list(answer);
        else if (verb == "info")
            print_info(answer);
        else if (verb == "logs" && !raw_output) {
            kvmm::TerminalFilter filter(kvmm::TerminalFilter::Mode::Log);
            std::string const shown = filter.feed(answer["text"].get<std::string>());
            std::fwrite(shown.data(), 1, shown.size(), stdout);
            std::string const rest = filter.finish();
            std::fwrite(rest.data(), 1, rest.size(), stdout);
        } else if (verb == "logs" || verb == "metrics") {
            std::string const text = answer["text"].get<std::string>();
            std::fwrite(text.data(), 1, text.size(), stdout);
        } else if (verb == "define")
            std::printf("VM '%s' defined\n", answer["name"].get<std::string>().c_str());
        else if (verb == "undefine")
            std::printf("VM '%s' undefined\n", name.c_str());
        else if (verb == "vol-list")
            print_volume_list(answer);
        else if (verb == "vol-info")
            print_volume_info(answer);
        else if (verb == "vol-create")
            std::printf("Volume '%s' created (%s, %s)\n", name.c_str(), answer["format"].get<std::string>().c_str(),
                        human_size(answer["capacity"].get<uint64_t>()).c_str());
        else if (verb == "vol-delete")
            std::printf("Volume '%s' deleted\n", name.c_str());
        else if (verb == "clone") {
            std::string overlays;
            for (auto const& volume : answer["volumes"])
                overlays += (overlays.empty() ? "" : ", ") + volume.get<std::string>();
            std::printf("VM '%s' cloned from '%s' (overlays: %s)\n", new_name.c_str(), name.c_str(),
                        overlays.empty() ? "none" : overlays.c_str());
        } else if (verb == "snapshot")
            std::printf("VM '%s' snapshot '%s' taken (%s), paused %lld ms\n", name.c_str(), snapshot_name.c_str(),
                        answer["snapshot"]["snapshot_path"].get<std::string>().c_str(),
                        static_cast<long long>(answer["snapshot"]["paused_ms"].get<int64_t>()));
        else if (verb == "autostart")
            std::printf("VM '%s' autostart %s\n", name.c_str(), on_off == "on" ? "enabled" : "disabled");
        else
            std::printf("VM '%s' %s\n", name.c_str(), answer["state"].get<std::string>().c_str());
    } catch (CommandError const& error) {
        std::fprintf(stderr, "kvmmctl: error: %s\n", error.message.c_str());
        return 1;
    }
    return 0;
}

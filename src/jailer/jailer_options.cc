#include "jailer/jailer_options.h"

#include "base/path.h"

#include <fmt/format.h>

#include <charconv>
#include <set>

namespace kvmm::jailer {
namespace {

bool is_id_character(char character) {
    return (character >= 'a' && character <= 'z') || (character >= 'A' && character <= 'Z') ||
           (character >= '0' && character <= '9') || character == '-';
}

bool is_control_file_character(char character) {
    return (character >= 'a' && character <= 'z') || (character >= '0' && character <= '9') || character == '_' ||
           character == '.';
}

Expected<uint64_t> parse_number(std::string_view text, std::string_view what) {
    uint64_t value = 0;
    auto const* end = text.data() + text.size();
    auto const [stop, error] = std::from_chars(text.data(), end, value);
    if (text.empty() || error != std::errc() || stop != end)
        return Error::format("{}: '{}' is not a decimal number", what, escape_control_characters(text));
    return value;
}

// uid_t and gid_t are 32 bits; (uid_t)-1 means "unchanged" to setresuid(2), so it is refused.
Expected<uint32_t> parse_id_number(std::string_view text, std::string_view flag) {
    auto const value = TRY(parse_number(text, flag));
    if (value >= 0xffffffffu)
        return Error::format("{}: {} is out of range (0 to 4294967294)", flag, value);
    return static_cast<uint32_t>(value);
}

Expected<std::string> absolute_path(std::string_view text, std::string_view flag) {
    TRY(check_path_characters(text, flag));
    if (text.empty() || text.front() != '/')
        return Error::format("{}: '{}' is not an absolute path", flag, text);
    return std::string(text);
}

// The flags that take a value, and the ones that are switches.
std::set<std::string_view> const VALUE_FLAGS {
    "--id",     "--exec-file",      "--uid",           "--gid",           "--chroot-base-dir", "--netns",
    "--cgroup", "--cgroup-version", "--parent-cgroup", "--resource-limit"
};
std::set<std::string_view> const SWITCH_FLAGS { "--daemonize", "--new-pid-ns", "--allow-root",
                                                "--help",      "-h",           "--version" };
// Repeatable by design; every other flag given twice is a conflict.
std::set<std::string_view> const REPEATABLE_FLAGS { "--cgroup", "--resource-limit" };

// kvmm flags the jailer sets itself (Firecracker's jailer passes the same ones).
std::set<std::string_view> const RESERVED_EXEC_FLAGS { "--id", "--start-time-us", "--start-time-cpu-us",
                                                       "--parent-cpu-time-us" };

Expected<void> check_exec_arguments(std::vector<std::string> const& arguments) {
    for (auto const& argument : arguments) {
        auto const name = std::string_view(argument).substr(0, argument.find('='));
        if (RESERVED_EXEC_FLAGS.contains(name))
            return Error::format("'{}' after '--': the jailer passes {} to kvmm itself", argument, name);
    }
    return {};
}

Expected<void> apply(JailerOptions& options, std::string_view flag, std::string_view value) {
    if (flag == "--id") {
        TRY(check_id(value));
        options.id = value;
    } else if (flag == "--exec-file") {
        // Relative to the jailer's working directory, as Firecracker's jailer accepts it; the
        // file is opened once, before anything changes directory.
        TRY(check_path_characters(value, flag));
        options.exec_file = value;
        auto const name = options.exec_name();
        if (name.empty() || name == "." || name == "..")
            return Error::format("--exec-file: '{}' does not name a file", value);
    } else if (flag == "--uid") {
        options.uid = TRY(parse_id_number(value, flag));
    } else if (flag == "--gid") {
        options.gid = TRY(parse_id_number(value, flag));
    } else if (flag == "--chroot-base-dir") {
        options.chroot_base = TRY(absolute_path(value, flag));
        while (options.chroot_base.size() > 1 && options.chroot_base.back() == '/')
            options.chroot_base.pop_back();
    } else if (flag == "--netns") {
        options.netns = TRY(absolute_path(value, flag));
    } else if (flag == "--cgroup") {
        options.cgroups.push_back(TRY(parse_cgroup_setting(value)));
    } else if (flag == "--cgroup-version") {
        if (value != "1" && value != "2")
            return Error::format("--cgroup-version: '{}' is neither 1 nor 2", escape_control_characters(value));
        options.cgroup_version = value == "1" ? 1 : 2;
    } else if (flag == "--parent-cgroup") {
        TRY(check_relative_cgroup_path(value));
        options.parent_cgroup = std::string(value);
    } else if (flag == "--resource-limit") {
        auto const limit = TRY(parse_resource_limit(value));
        for (auto const& earlier : options.resource_limits)
            if (earlier.resource == limit.resource)
                return Error::format("--resource-limit {}: this resource is already limited to {}", value,
                                     earlier.value);
        options.resource_limits.push_back(limit);
    }
    return {};
}

} // namespace

std::string JailerOptions::exec_name() const {
    auto const slash = exec_file.rfind('/');
    return slash == std::string::npos ? exec_file : exec_file.substr(slash + 1);
}

std::string JailerOptions::cgroup_parent() const { return parent_cgroup.value_or(exec_name()); }

Expected<void> check_id(std::string_view id) {
    if (id.empty())
        return Error("--id: the id is empty (1 to 64 letters, digits and hyphens)");
    if (id.size() > MAX_ID_LENGTH)
        return Error::format("--id: '{}...' is {} characters long; at most {} are allowed", id.substr(0, 16), id.size(),
                             MAX_ID_LENGTH);
    for (char const character : id)
        if (!is_id_character(character))
            return Error::format("--id: '{}' contains '{}'; only letters, digits and hyphens are allowed",
                                 escape_control_characters(id),
                                 escape_control_characters(std::string_view(&character, 1)));
    return {};
}

Expected<CgroupSetting> parse_cgroup_setting(std::string_view text) {
    auto const equals = text.find('=');
    if (equals == std::string_view::npos)
        return Error::format("--cgroup: '{}' is not FILE=VALUE (e.g. cpuset.cpus=0)", escape_control_characters(text));
    auto const file = text.substr(0, equals);
    auto const value = text.substr(equals + 1);
    auto const dot = file.find('.');
    if (dot == 0 || dot == std::string_view::npos || dot + 1 == file.size())
        return Error::format("--cgroup: '{}' is not a control file name CONTROLLER.NAME",
                             escape_control_characters(file));
    for (char const character : file)
        if (!is_control_file_character(character))
            return Error::format("--cgroup: control file '{}' contains a character other than a-z, 0-9, '_' "
                                 "and '.'",
                                 escape_control_characters(file));
    if (value.empty())
        return Error::format("--cgroup: {} has an empty value", file);
    for (char const character : value)
        if (is_control_character(character))
            return Error::format("--cgroup: the value of {} contains a control character: '{}'", file,
                                 escape_control_characters(value));
    return CgroupSetting { std::string(file), std::string(value) };
}

Expected<ResourceLimit> parse_resource_limit(std::string_view text) {
    auto const equals = text.find('=');
    if (equals == std::string_view::npos)
        return Error::format("--resource-limit: '{}' is not RESOURCE=VALUE (fsize=N or no-file=N)",
                             escape_control_characters(text));
    auto const name = text.substr(0, equals);
    ResourceLimit limit;
    if (name == "fsize")
        limit.resource = Resource::FileSize;
    else if (name == "no-file")
        limit.resource = Resource::OpenFiles;
    else
        return Error::format("--resource-limit: unknown resource '{}' (fsize or no-file)",
                             escape_control_characters(name));
    limit.value = TRY(parse_number(text.substr(equals + 1), fmt::format("--resource-limit {}", name)));
    return limit;
}

Expected<void> check_relative_cgroup_path(std::string_view path) {
    TRY(check_path_characters(path, "--parent-cgroup"));
    if (path.empty() || path.front() == '/')
        return Error::format("--parent-cgroup: '{}' is not a relative path", path);
    size_t start = 0;
    while (start <= path.size()) {
        auto const slash = path.find('/', start);
        auto const end = slash == std::string_view::npos ? path.size() : slash;
        auto const component = path.substr(start, end - start);
        if (component.empty() || component == "." || component == "..")
            return Error::format("--parent-cgroup: '{}' has an empty, '.' or '..' component", path);
        if (slash == std::string_view::npos)
            break;
        start = slash + 1;
    }
    return {};
}

Expected<ParsedCommandLine> parse_command_line(std::vector<std::string> const& arguments) {
    ParsedCommandLine parsed;
    auto& options = parsed.options;
    std::set<std::string> seen;
    for (size_t index = 0; index < arguments.size(); ++index) {
        std::string_view argument = arguments[index];
        if (argument == "--") {
            options.exec_arguments.assign(arguments.begin() + static_cast<std::ptrdiff_t>(index) + 1, arguments.end());
            break;
        }
        std::string_view flag = argument;
        std::optional<std::string_view> value;
        if (auto const equals = argument.find('='); argument.starts_with("--") && equals != std::string_view::npos) {
            flag = argument.substr(0, equals);
            value = argument.substr(equals + 1);
        }
        if (SWITCH_FLAGS.contains(flag)) {
            if (value)
                return Error::format("{} takes no value (got '{}')", flag, escape_control_characters(*value));
            if (flag == "--help" || flag == "-h")
                parsed.request = JailerRequest::Help;
            else if (flag == "--version")
                parsed.request = JailerRequest::Version;
            else if (flag == "--daemonize")
                options.daemonize = true;
            else if (flag == "--new-pid-ns")
                options.new_pid_ns = true;
            else
                options.allow_root = true;
        } else if (VALUE_FLAGS.contains(flag)) {
            if (!value) {
                if (index + 1 >= arguments.size())
                    return Error::format("{} needs a value", flag);
                value = arguments[++index];
            }
            TRY(apply(options, flag, *value));
        } else {
            return Error::format("unknown argument '{}' (kvmm's own arguments go after '--')",
                                 escape_control_characters(argument));
        }
        if (!seen.insert(std::string(flag)).second && !REPEATABLE_FLAGS.contains(flag))
            return Error::format("{} is given more than once", flag);
    }
    if (parsed.request != JailerRequest::Run)
        return parsed;

    for (std::string_view required : { "--id", "--exec-file", "--uid", "--gid" })
        if (!seen.contains(std::string(required)))
            return Error::format("{} is required", required);
    if ((options.uid == 0 || options.gid == 0) && !options.allow_root)
        return Error::format("--uid {} --gid {}: running kvmm as uid 0 or gid 0 defeats the jail; pass "
                             "--allow-root to do it anyway",
                             options.uid, options.gid);
    if (options.parent_cgroup && options.cgroups.empty() && options.cgroup_version == 1)
        return Error("--parent-cgroup without --cgroup on cgroup v1: no controller names the hierarchies to use "
                     "(give a --cgroup setting, or --cgroup-version 2)");
    std::set<std::string> files;
    for (auto const& setting : options.cgroups)
        if (!files.insert(setting.file).second)
            return Error::format("--cgroup {} is given more than once", setting.file);
    if (options.chroot_base == "/")
        return Error("--chroot-base-dir: '/' cannot be the chroot base");
    TRY(check_exec_arguments(options.exec_arguments));
    return parsed;
}

std::string usage() {
    return fmt::format(
        "Usage: kvmm-jailer --id ID --exec-file PATH --uid UID --gid GID [options] [-- kvmm arguments]\n"
        "\n"
        "Builds CHROOT_BASE/EXEC_NAME/ID/root, copies the exec file (and the shared libraries it needs) in,\n"
        "pivots into it in a new mount namespace, drops to UID:GID with no capabilities and execs it.\n"
        "\n"
        "  --id ID                  1 to {} letters, digits and hyphens; passed on as --id\n"
        "  --exec-file PATH         the kvmm binary\n"
        "  --uid UID, --gid GID     identity of the jailed process (0 only with --allow-root)\n"
        "  --chroot-base-dir DIR    base of the jails (default {}); must exist, not a symlink,\n"
        "                           not writable by others\n"
        "  --netns PATH             join this network namespace (e.g. /var/run/netns/NAME)\n"
        "  --daemonize              setsid() and stdin/stdout/stderr to /dev/null\n"
        "  --new-pid-ns             run kvmm as pid 1 of a new PID namespace; its host pid goes to\n"
        "                           <jail root>/EXEC_NAME.pid\n"
        "  --cgroup FILE=VALUE      write VALUE to FILE of the VM's cgroup (repeatable)\n"
        "  --cgroup-version 1|2     cgroup hierarchy to use (default 1)\n"
        "  --parent-cgroup PATH     the VM's cgroup is PARENT/ID (default EXEC_NAME)\n"
        "  --resource-limit R=N     fsize=BYTES or no-file=N (repeatable; no-file defaults to {})\n"
        "  --allow-root             allow --uid 0 or --gid 0 (capabilities are still dropped)\n"
        "  --version, --help\n",
        MAX_ID_LENGTH, DEFAULT_CHROOT_BASE, DEFAULT_OPEN_FILES_LIMIT);
}

} // namespace kvmm::jailer

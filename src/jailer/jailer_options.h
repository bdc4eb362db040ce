// JailerOptions: kvmm-jailer's command line, which is Firecracker's jailer command line
// (Firecracker docs/jailer.md, "Jailer Usage") plus --allow-root, parsed and checked without
// touching the file system. Everything that can be refused from the text alone is refused here,
// before the jailer creates anything: a missing or repeated flag, an id other than 1-64
// alphanumerics and hyphens, a relative path, a cgroup setting or resource limit that is not
// KEY=VALUE of a known kind, uid or gid 0 without --allow-root, and kvmm arguments after `--`
// that would contradict what the jailer passes itself (--id, the start-time flags).
//
// Threading: pure functions of their arguments.
#pragma once

#include "base/expected.h"

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm::jailer {

// One --cgroup KEY=VALUE: KEY is a control file such as "pids.max" or "cpuset.cpus"; the part
// before the first '.' names the controller (cgroup v1 hierarchy, v2 subtree_control entry).
struct CgroupSetting {
    std::string file;
    std::string value;

    std::string controller() const { return file.substr(0, file.find('.')); }
    bool operator==(CgroupSetting const&) const = default;
};

// The --resource-limit resources Firecracker offers (setrlimit(2) RLIMIT_FSIZE, RLIMIT_NOFILE).
enum class Resource { FileSize, OpenFiles };

struct ResourceLimit {
    Resource resource { Resource::OpenFiles };
    uint64_t value { 0 };
    bool operator==(ResourceLimit const&) const = default;
};

// Firecracker bounds no-file to 2048 when no --resource-limit names it.
inline constexpr uint64_t DEFAULT_OPEN_FILES_LIMIT = 2048;
inline constexpr size_t MAX_ID_LENGTH = 64;
inline constexpr std::string_view DEFAULT_CHROOT_BASE = "/srv/jailer";

struct JailerOptions {
    std::string id;
    std::string exec_file;
    uid_t uid { 0 };
    gid_t gid { 0 };
    std::string chroot_base { DEFAULT_CHROOT_BASE };
    std::optional<std::string> netns;
    bool daemonize { false };
    bool new_pid_ns { false };
    std::vector<CgroupSetting> cgroups;
    int cgroup_version { 1 };
    // Relative to each hierarchy's root; Firecracker's default is the exec file's name.
    std::optional<std::string> parent_cgroup;
    std::vector<ResourceLimit> resource_limits; // at most one per resource
    bool allow_root { false };
    std::vector<std::string> exec_arguments; // after `--`, passed to kvmm unchanged

    // The last component of exec_file: the program's name inside the jail and the directory
    // under the chroot base.
    std::string exec_name() const;
    // parent_cgroup, or exec_name() where it was not given.
    std::string cgroup_parent() const;
    // Whether the jailer places the process in a cgroup at all: Firecracker attaches it only
    // to the cgroups that --cgroup names; on v2 a --parent-cgroup alone also places it there.
    bool joins_cgroup() const { return !cgroups.empty() || (cgroup_version == 2 && parent_cgroup.has_value()); }
};

// What the command line asked for besides a jail.
enum class JailerRequest { Run, Help, Version };

struct ParsedCommandLine {
    JailerRequest request { JailerRequest::Run };
    JailerOptions options; // meaningful for Run
};

// Parses argv[1..] (without the program name). Accepts "--flag VALUE" and "--flag=VALUE".
Expected<ParsedCommandLine> parse_command_line(std::vector<std::string> const& arguments);

// Firecracker's id rule: 1 to 64 characters, each an ASCII letter, digit or hyphen.
Expected<void> check_id(std::string_view id);
// KEY=VALUE with KEY a control file name (lowercase letters, digits, '_' and '.', with a '.'
// after the controller) and VALUE printable text without a newline.
Expected<CgroupSetting> parse_cgroup_setting(std::string_view text);
// fsize=N or no-file=N with N a decimal number.
Expected<ResourceLimit> parse_resource_limit(std::string_view text);
// A relative path of plain components: no leading '/', no "." or ".." component, no empty one.
Expected<void> check_relative_cgroup_path(std::string_view path);

// The usage text for --help.
std::string usage();

} // namespace kvmm::jailer

#include "manager/cgroup.h"

#include "base/file.h"
#include "base/unique_fd.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <limits>
#include <system_error>

namespace kvmm {

namespace {

namespace fs = std::filesystem;

// cgroup v1 treats a memory limit at or above this (LONG_MAX rounded down to a page) as "no limit".
constexpr uint64_t V1_UNLIMITED_MEMORY =
    static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) & ~uint64_t { 4095 };
constexpr uint32_t DEFAULT_CPU_WEIGHT = 100; // cgroup-v2.rst "cpu.weight": default 100
constexpr uint64_t V1_DEFAULT_SHARES = 1024; // the v1 equivalent of weight 100

// Control files and /proc files are small; a megabyte is far beyond any of them.
Expected<std::string> read_text(fs::path const& path) { return read_text_file(path.string(), 1024 * 1024); }

// Control files take one value per write(2); the kernel's error (EINVAL, EBUSY) is the answer.
Expected<void> write_text(fs::path const& path, std::string_view value) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("open {}", path.string()));
    ssize_t const written = ::write(fd.get(), value.data(), value.size());
    if (written < 0)
        return Error::from_errno(fmt::format("write '{}' to {}", value, path.string()));
    if (static_cast<size_t>(written) != value.size())
        return Error::format("write '{}' to {}: short write of {} bytes", value, path.string(), written);
    return {};
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.remove_suffix(1);
    while (!text.empty() && (text.front() == '\n' || text.front() == ' '))
        text.remove_prefix(1);
    return text;
}

template <typename Integer>
Expected<Integer> parse_integer(std::string_view text, fs::path const& path) {
    text = trim(text);
    Integer value {};
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || text.empty())
        return Error::format("{}: '{}' is not an integer", path.string(), text);
    return value;
}

template <typename Integer>
Expected<Integer> read_integer(fs::path const& path) {
    auto const text = TRY(read_text(path));
    return parse_integer<Integer>(text, path);
}

// "key value" lines (cpu.stat, memory.stat): the value of `key`.
Expected<uint64_t> read_keyed(fs::path const& path, std::string_view key) {
    auto const text = TRY(read_text(path));
    std::string_view rest = text;
    while (!rest.empty()) {
        auto const end = std::min(rest.find('\n'), rest.size());
        auto const line = rest.substr(0, end);
        rest.remove_prefix(std::min(end + 1, rest.size()));
        auto const space = line.find(' ');
        if (space != std::string_view::npos && line.substr(0, space) == key)
            return parse_integer<uint64_t>(line.substr(space + 1), path);
    }
    return Error::format("{} has no '{}' line", path.string(), key);
}

// A relative cgroup path: non-empty components, none of them "." or "..".
Expected<void> check_relative(std::string_view what, std::string const& path) {
    if (path.empty())
        return Error::format("cgroup {} is empty", what);
    if (path.front() == '/')
        return Error::format("cgroup {} '{}' must be relative", what, path);
    for (auto const& component : fs::path(path)) {
        if (component.empty() || component == "." || component == "..")
            return Error::format("cgroup {} '{}' has an invalid component '{}'", what, path, component.string());
    }
    return {};
}

// Creates `directory` if missing; an existing one is reused (a cgroup left by an earlier run).
Expected<void> make_cgroup_directory(fs::path const& directory) {
    if (::mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST)
        return Error::from_errno(fmt::format("mkdir {}", directory.string()));
    return {};
}

bool is_cgroup_directory(fs::path const& path) {
    struct stat status {};
    return ::stat(path.c_str(), &status) == 0 && S_ISDIR(status.st_mode);
}

// /proc/self/mounts escapes space, tab, newline and backslash as \ooo (getmntent(3)).
std::string unescape_mount_field(std::string_view field) {
    std::string text;
    for (size_t i = 0; i < field.size(); ++i) {
        if (field[i] == '\\' && i + 3 < field.size()) {
            auto const digits = field.substr(i + 1, 3);
            if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '7'; })) {
                text += static_cast<char>(((digits[0] - '0') << 6) | ((digits[1] - '0') << 3) | (digits[2] - '0'));
                i += 3;
                continue;
            }
        }
        text += field[i];
    }
    return text;
}

bool has_token(std::string_view list, char separator, std::string_view token) {
    while (!list.empty()) {
        auto const end = std::min(list.find(separator), list.size());
        if (list.substr(0, end) == token)
            return true;
        list.remove_prefix(std::min(end + 1, list.size()));
    }
    return false;
}

// Makes sure that every level from the v2 root down to `parent` hands the cpu and memory
// controllers to its children (cgroup-v2.rst "Enabling and Disabling"): a controller's files
// appear in a cgroup only when its parent's cgroup.subtree_control enables it.
Expected<void> enable_v2_controllers(fs::path const& root, std::string const& parent) {
    fs::path level = root;
    auto enable = [](fs::path const& directory) -> Expected<void> {
        auto const current = TRY(read_text(directory / "cgroup.subtree_control"));
        if (has_token(trim(current), ' ', "cpu") && has_token(trim(current), ' ', "memory"))
            return {};
        return write_text(directory / "cgroup.subtree_control", "+cpu +memory");
    };
    TRY(enable(level));
    for (auto const& component : fs::path(parent)) {
        level /= component;
        TRY(make_cgroup_directory(level));
        TRY(enable(level));
    }
    return {};
}

} // namespace

Expected<CgroupHierarchies> CgroupHierarchies::detect(fs::path const& mounts_file) {
    auto const mounts = TRY(read_text(mounts_file));
    CgroupHierarchies found;
    std::optional<fs::path> unified;
    std::string_view rest = mounts;
    while (!rest.empty()) {
        auto const end = std::min(rest.find('\n'), rest.size());
        std::string_view const line = rest.substr(0, end);
        rest.remove_prefix(std::min(end + 1, rest.size()));
        // device mount_point type options dump pass
        std::string_view fields[4];
        std::string_view cursor = line;
        size_t count = 0;
        while (count < 4 && !cursor.empty()) {
            auto const field_end = std::min(cursor.find(' '), cursor.size());
            fields[count++] = cursor.substr(0, field_end);
            cursor.remove_prefix(std::min(field_end + 1, cursor.size()));
        }
        if (count < 4)
            continue;
        fs::path const mount_point = unescape_mount_field(fields[1]);
        if (fields[2] == "cgroup2") {
            auto const controllers = read_text(mount_point / "cgroup.controllers");
            if (controllers && has_token(trim(*controllers), ' ', "cpu") &&
                has_token(trim(*controllers), ' ', "memory"))
                unified = mount_point;
        } else if (fields[2] == "cgroup") {
            if (has_token(fields[3], ',', "cpu"))
                found.cpu = mount_point;
            if (has_token(fields[3], ',', "cpuacct"))
                found.cpuacct = mount_point;
            if (has_token(fields[3], ',', "memory"))
                found.memory = mount_point;
        }
    }
    if (unified) {
        CgroupHierarchies v2;
        v2.version = Version::V2;
        v2.unified = *unified;
        return v2;
    }
    if (found.cpu.empty() || found.cpuacct.empty() || found.memory.empty())
        return Error::format("no usable cgroup file system in {}: neither a cgroup2 mount with the cpu and memory "
                             "controllers nor v1 cpu, cpuacct and memory hierarchies (cpu '{}', cpuacct '{}', "
                             "memory '{}')",
                             mounts_file.string(), found.cpu.string(), found.cpuacct.string(), found.memory.string());
    found.version = Version::V1;
    return found;
}

Expected<Cgroup> Cgroup::create(std::string const& parent, std::string const& name, CgroupLimits const& limits) {
    return create(TRY(CgroupHierarchies::detect()), parent, name, limits);
}

Expected<Cgroup> Cgroup::create(CgroupHierarchies const& hierarchies, std::string const& parent,
                                std::string const& name, CgroupLimits const& limits) {
    TRY(check_relative("parent", parent));
    TRY(check_relative("name", name));
    if (name.find('/') != std::string::npos)
        return Error::format("cgroup name '{}' must not contain '/'", name);
    if (hierarchies.version == CgroupHierarchies::Version::V2) {
        TRY(enable_v2_controllers(hierarchies.unified, parent));
        TRY(make_cgroup_directory(hierarchies.unified / parent / name));
    } else {
        for (auto const* root : { &hierarchies.cpu, &hierarchies.cpuacct, &hierarchies.memory }) {
            fs::path level = *root;
            for (auto const& component : fs::path(parent)) {
                level /= component;
                TRY(make_cgroup_directory(level));
            }
            TRY(make_cgroup_directory(level / name));
        }
    }
    auto cgroup = TRY(open_existing(hierarchies, parent, name));
    TRY(cgroup.set_limits(limits));
    return cgroup;
}

Expected<Cgroup> Cgroup::open_existing(std::string const& parent, std::string const& name) {
    return open_existing(TRY(CgroupHierarchies::detect()), parent, name);
}

Expected<Cgroup> Cgroup::open_existing(CgroupHierarchies const& hierarchies, std::string const& parent,
                                       std::string const& name) {
    TRY(check_relative("parent", parent));
    TRY(check_relative("name", name));
    Cgroup cgroup = [&] {
        if (hierarchies.version == CgroupHierarchies::Version::V2) {
            auto const directory = hierarchies.unified / parent / name;
            return Cgroup(CgroupHierarchies::Version::V2, { directory }, directory, directory, directory);
        }
        auto const cpu = hierarchies.cpu / parent / name;
        auto const cpuacct = hierarchies.cpuacct / parent / name;
        auto const memory = hierarchies.memory / parent / name;
        std::vector<fs::path> unique { cpu };
        for (auto const& path : { cpuacct, memory }) {
            if (std::find(unique.begin(), unique.end(), path) == unique.end())
                unique.push_back(path);
        }
        return Cgroup(CgroupHierarchies::Version::V1, std::move(unique), cpu, cpuacct, memory);
    }();
    for (auto const& path : cgroup.paths()) {
        if (!is_cgroup_directory(path))
            return Error::format("cgroup {} does not exist", path.string());
    }
    return cgroup;
}

Expected<void> Cgroup::set_limits(CgroupLimits const& limits) {
    if (limits.cpu_weight && (*limits.cpu_weight < 1 || *limits.cpu_weight > 10000))
        return Error::format("cpu weight {} is out of range 1..10000", *limits.cpu_weight);
    if (limits.cpu_quota_percent && *limits.cpu_quota_percent == 0)
        return Error("cpu quota 0% would stop the VM; leave the quota out for no limit");
    // The quota as the files spell it: microseconds per period, or "max" (v2) / "-1" (v1) for none.
    bool const has_quota = limits.cpu_quota_percent.has_value();
    uint64_t const quota_us = uint64_t { limits.cpu_quota_percent.value_or(0) } * CPU_PERIOD_US / 100;
    if (m_version == CgroupHierarchies::Version::V2) {
        TRY(write_text(m_cpu / "cpu.weight", fmt::format("{}", limits.cpu_weight.value_or(DEFAULT_CPU_WEIGHT))));
        TRY(write_text(m_cpu / "cpu.max", has_quota ? fmt::format("{} {}", quota_us, CPU_PERIOD_US)
                                                    : fmt::format("max {}", CPU_PERIOD_US)));
        TRY(write_text(m_memory / "memory.max",
                       limits.memory_limit_bytes ? fmt::format("{}", *limits.memory_limit_bytes) : "max"));
        return {};
    }
    // v1 shares are relative like v2 weights; weight 100 (the default) maps to 1024 (the default).
    uint64_t const shares =
        limits.cpu_weight ? std::max<uint64_t>(2, uint64_t { *limits.cpu_weight } * 1024 / 100) : V1_DEFAULT_SHARES;
    TRY(write_text(m_cpu / "cpu.shares", fmt::format("{}", shares)));
    // The period first: the kernel checks the quota against the period that is in force.
    TRY(write_text(m_cpu / "cpu.cfs_period_us", fmt::format("{}", CPU_PERIOD_US)));
    TRY(write_text(m_cpu / "cpu.cfs_quota_us", has_quota ? fmt::format("{}", quota_us) : "-1"));
    TRY(write_text(m_memory / "memory.limit_in_bytes",
                   limits.memory_limit_bytes ? fmt::format("{}", *limits.memory_limit_bytes) : "-1"));
    return {};
}

Expected<CgroupLimits> Cgroup::limits() const {
    CgroupLimits limits;
    if (m_version == CgroupHierarchies::Version::V2) {
        auto const weight = TRY(read_integer<uint32_t>(m_cpu / "cpu.weight"));
        if (weight != DEFAULT_CPU_WEIGHT)
            limits.cpu_weight = weight;
        auto const max_path = m_cpu / "cpu.max";
        auto const max = TRY(read_text(max_path));
        std::string_view const text = trim(max);
        auto const space = text.find(' ');
        if (space == std::string_view::npos)
            return Error::format("{}: '{}' is not 'QUOTA PERIOD'", max_path.string(), text);
        if (text.substr(0, space) != "max") {
            auto const quota = TRY(parse_integer<uint64_t>(text.substr(0, space), max_path));
            auto const period = TRY(parse_integer<uint64_t>(text.substr(space + 1), max_path));
            if (period == 0)
                return Error::format("{}: period 0", max_path.string());
            limits.cpu_quota_percent = static_cast<uint32_t>(quota * 100 / period);
        }
        auto const memory_path = m_memory / "memory.max";
        auto const memory = TRY(read_text(memory_path));
        if (trim(memory) != "max")
            limits.memory_limit_bytes = TRY(parse_integer<uint64_t>(memory, memory_path));
        return limits;
    }
    auto const shares = TRY(read_integer<uint64_t>(m_cpu / "cpu.shares"));
    if (shares != V1_DEFAULT_SHARES)
        limits.cpu_weight = static_cast<uint32_t>((shares * 100 + 512) / 1024); // rounded: undoes weight*1024/100
    auto const quota = TRY(read_integer<int64_t>(m_cpu / "cpu.cfs_quota_us"));
    if (quota > 0) {
        auto const period = TRY(read_integer<uint64_t>(m_cpu / "cpu.cfs_period_us"));
        if (period == 0)
            return Error::format("{}: period 0", (m_cpu / "cpu.cfs_period_us").string());
        limits.cpu_quota_percent = static_cast<uint32_t>(static_cast<uint64_t>(quota) * 100 / period);
    }
    auto const memory = TRY(read_integer<uint64_t>(m_memory / "memory.limit_in_bytes"));
    if (memory < V1_UNLIMITED_MEMORY)
        limits.memory_limit_bytes = memory;
    return limits;
}

Expected<void> Cgroup::add_process(pid_t pid) {
    if (pid <= 0)
        return Error::format("cannot add process id {} to a cgroup", pid);
    for (auto const& path : m_paths)
        TRY(write_text(path / "cgroup.procs", fmt::format("{}", pid)));
    return {};
}

Expected<std::vector<pid_t>> Cgroup::processes() const {
    auto const path = m_paths.front() / "cgroup.procs";
    auto const text = TRY(read_text(path));
    std::vector<pid_t> pids;
    std::string_view rest = text;
    while (!rest.empty()) {
        auto const end = std::min(rest.find('\n'), rest.size());
        auto const line = rest.substr(0, end);
        rest.remove_prefix(std::min(end + 1, rest.size()));
        if (!line.empty())
            pids.push_back(TRY(parse_integer<pid_t>(line, path)));
    }
    return pids;
}

Expected<CgroupUsage> Cgroup::usage() const {
    CgroupUsage usage;
    if (m_version == CgroupHierarchies::Version::V2) {
        usage.cpu_usage_ns = TRY(read_keyed(m_cpuacct / "cpu.stat", "usage_usec")) * 1000;
        usage.memory_bytes = TRY(read_integer<uint64_t>(m_memory / "memory.current"));
        return usage;
    }
    usage.cpu_usage_ns = TRY(read_integer<uint64_t>(m_cpuacct / "cpuacct.usage"));
    usage.memory_bytes = TRY(read_integer<uint64_t>(m_memory / "memory.usage_in_bytes"));
    return usage;
}

Expected<void> Cgroup::destroy() {
    // Every directory is tried, so that one busy hierarchy does not leave the others behind.
    std::optional<Error> first_error;
    for (auto const& path : m_paths) {
        if (::rmdir(path.c_str()) != 0 && errno != ENOENT && !first_error)
            first_error = Error::from_errno(fmt::format("remove cgroup {}", path.string()));
    }
    if (first_error)
        return *first_error;
    return {};
}

Expected<std::vector<std::pair<uint32_t, pid_t>>> find_vcpu_threads(pid_t pid) {
    auto const task_directory = fs::path(fmt::format("/proc/{}/task", pid));
    std::vector<std::pair<uint32_t, pid_t>> threads;
    std::error_code error;
    for (fs::directory_iterator it(task_directory, error), end; !error && it != end; it.increment(error)) {
        pid_t thread_id = 0;
        auto const name = it->path().filename().string();
        auto [name_end, parse_error] = std::from_chars(name.data(), name.data() + name.size(), thread_id);
        if (parse_error != std::errc() || name_end != name.data() + name.size())
            continue;
        auto const comm = read_text(it->path() / "comm");
        if (!comm)
            continue; // the thread exited meanwhile
        std::string_view const thread_name = trim(*comm);
        // vmm/vcpu_thread.cc names its threads "vcpu%u".
        constexpr std::string_view prefix = "vcpu";
        if (!thread_name.starts_with(prefix))
            continue;
        auto const digits = thread_name.substr(prefix.size());
        uint32_t index = 0;
        auto [digits_end, digits_error] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
        if (digits.empty() || digits_error != std::errc() || digits_end != digits.data() + digits.size())
            continue;
        threads.emplace_back(index, thread_id);
    }
    if (error)
        return Error(fmt::format("list threads of process {}: {}", pid, error.message()), error.value());
    std::sort(threads.begin(), threads.end());
    return threads;
}

Expected<void> pin_vcpu_threads(pid_t kvmm_pid, std::vector<std::vector<uint32_t>> const& pins) {
    auto const threads = TRY(find_vcpu_threads(kvmm_pid));
    for (size_t index = 0; index < pins.size(); ++index) {
        if (pins[index].empty())
            continue;
        auto const thread =
            std::find_if(threads.begin(), threads.end(), [&](auto const& entry) { return entry.first == index; });
        if (thread == threads.end())
            return Error::format("process {} has no thread for vCPU {} (no thread named vcpu{})", kvmm_pid, index,
                                 index);
        cpu_set_t set;
        CPU_ZERO(&set);
        for (uint32_t const cpu : pins[index]) {
            if (cpu >= CPU_SETSIZE)
                return Error::format("vCPU {}: host CPU {} is beyond the largest possible CPU {}", index, cpu,
                                     CPU_SETSIZE - 1);
            CPU_SET(cpu, &set);
        }
        if (::sched_setaffinity(thread->second, sizeof(set), &set) != 0)
            return Error::from_errno(fmt::format("pin vCPU {} (thread {}) to host CPUs [{}]", index, thread->second,
                                                 fmt::join(pins[index], ", ")));
    }
    return {};
}

} // namespace kvmm

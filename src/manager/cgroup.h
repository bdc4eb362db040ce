// Cgroup: the control group that holds one kvmm process, with its CPU and memory limits and
// its usage counters, on either cgroup version:
//   v2 (unified hierarchy, /sys/fs/cgroup/cgroup.controllers exists): one directory
//      ROOT/PARENT/NAME; limits in cpu.weight, cpu.max ("QUOTA PERIOD"), memory.max; usage in
//      cpu.stat (usage_usec) and memory.current (Documentation/admin-guide/cgroup-v2.rst).
//   v1 (one hierarchy per controller, e.g. /sys/fs/cgroup/cpu, /sys/fs/cgroup/memory): one
//      directory per hierarchy; cpu.shares, cpu.cfs_quota_us/cpu.cfs_period_us,
//      memory.limit_in_bytes; usage in cpuacct.usage and memory.usage_in_bytes
//      (Documentation/admin-guide/cgroup-v1/, scheduler/sched-bwc.rst).
// Limits use cgroup v2 semantics; on v1 a weight W becomes shares W*1024/100 (the default
// weight 100 maps to the default 1024 shares).
// The kernel is the source of truth: a Cgroup is only a set of paths, so a restarted daemon
// re-opens the cgroups of the VMs that kept running (open_existing). Nothing is removed on
// destruction; destroy() does that explicitly once the process has exited.
//
// Also pin_vcpu_threads(): finds the vCPU threads of a kvmm process (named "vcpuN" by
// vmm/vcpu_thread.cc) and sets their CPU affinity.
//
// Threading: no shared state; the kernel serialises writes to one cgroup file.
#pragma once

#include "base/expected.h"

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kvmm {

struct CgroupLimits {
    std::optional<uint32_t> cpu_weight;        // 1..10000
    std::optional<uint32_t> cpu_quota_percent; // 100 = one host CPU
    std::optional<uint64_t> memory_limit_bytes;

    bool operator==(CgroupLimits const&) const = default;
};

struct CgroupUsage {
    uint64_t cpu_usage_ns { 0 };
    uint64_t memory_bytes { 0 };
};

// Where the cgroup file systems are mounted.
struct CgroupHierarchies {
    enum class Version { V1, V2 } version { Version::V2 };
    std::filesystem::path unified; // v2 mount point
    std::filesystem::path cpu;     // v1 mount points (cpu and cpuacct may be the same, co-mounted)
    std::filesystem::path cpuacct;
    std::filesystem::path memory;

    // Reads the mount table (proc(5) /proc/self/mounts format). v2 is chosen when a cgroup2
    // mount has the cpu and memory controllers available (cgroup.controllers); otherwise the v1
    // cpu, cpuacct and memory hierarchies must all be mounted.
    static Expected<CgroupHierarchies> detect(std::filesystem::path const& mounts_file = "/proc/self/mounts");
};

// The CFS period used for cpu_quota_percent (100 ms, the kernel's default).
inline constexpr uint64_t CPU_PERIOD_US = 100000;

class Cgroup {
public:
    // Creates PARENT/NAME in each hierarchy (and PARENT if missing) and writes the limits.
    // `parent` may contain '/' ("kvmm/test"); neither may contain "." or ".." components.
    static Expected<Cgroup> create(std::string const& parent, std::string const& name, CgroupLimits const& limits);
    static Expected<Cgroup> create(CgroupHierarchies const& hierarchies, std::string const& parent,
                                   std::string const& name, CgroupLimits const& limits);
    // Opens a cgroup created earlier (e.g. by a previous daemon); an error if it does not exist.
    static Expected<Cgroup> open_existing(std::string const& parent, std::string const& name);
    static Expected<Cgroup> open_existing(CgroupHierarchies const& hierarchies, std::string const& parent,
                                          std::string const& name);

    // Writes the given limits; a limit that is nullopt is reset to "no limit" / the default weight.
    Expected<void> set_limits(CgroupLimits const& limits);
    // Reads the limits back from the kernel (nullopt where unlimited / default weight).
    Expected<CgroupLimits> limits() const;

    // Moves process `pid` (all its threads) into the cgroup.
    Expected<void> add_process(pid_t pid);
    // The processes in the cgroup (from cgroup.procs of the first hierarchy).
    Expected<std::vector<pid_t>> processes() const;
    Expected<CgroupUsage> usage() const;
    // rmdir of each directory; fails (EBUSY) while a process is still inside.
    Expected<void> destroy();

    CgroupHierarchies::Version version() const { return m_version; }
    // One directory per hierarchy: {unified} on v2; {cpu, cpuacct, memory} (deduplicated) on v1.
    std::vector<std::filesystem::path> const& paths() const { return m_paths; }

private:
    Cgroup(CgroupHierarchies::Version version, std::vector<std::filesystem::path> paths, std::filesystem::path cpu,
           std::filesystem::path cpuacct, std::filesystem::path memory)
        : m_version(version), m_paths(std::move(paths)), m_cpu(std::move(cpu)), m_cpuacct(std::move(cpuacct)),
          m_memory(std::move(memory)) {}

    CgroupHierarchies::Version m_version;
    std::vector<std::filesystem::path> m_paths;
    std::filesystem::path m_cpu;     // directory holding the cpu controller files
    std::filesystem::path m_cpuacct; // ... cpuacct (v1) / cpu.stat (v2)
    std::filesystem::path m_memory;  // ... memory controller files
};

// The vCPU threads of process `pid`: (vCPU index, thread id), sorted by index, found by their
// names "vcpuN" in /proc/PID/task/*/comm.
Expected<std::vector<std::pair<uint32_t, pid_t>>> find_vcpu_threads(pid_t pid);

// Sets the CPU affinity of vCPU i of process `kvmm_pid` to pins[i] (an empty list: unchanged).
// An error if a pinned vCPU thread does not exist (yet) or a CPU is not usable on this host.
Expected<void> pin_vcpu_threads(pid_t kvmm_pid, std::vector<std::vector<uint32_t>> const& pins);

} // namespace kvmm

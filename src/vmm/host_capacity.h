// Warnings for a machine larger than the host that runs it: more guest memory than the host's
// RAM, or more vCPUs than host CPUs this process may run on.
//
// Why warn and not refuse: both are legitimate overcommit (guest memory is mapped lazily with
// MAP_NORESERVE, most guests never touch all of it, and a balloon can take it back; idle vCPUs
// cost nothing), and neither QEMU nor Firecracker refuses them. But a guest that does use it
// all is then killed by the host's OOM killer or runs its vCPUs time-sliced with spinlocks held,
// and the administrator should have been told at start: the warning says what was asked and
// what the host has. A hard limit belongs to the cgroup (kvmmd's resources.memory_limit).
//
// Threading: plain functions.
#pragma once

#include "config/vm_config.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvmm {

struct HostCapacity {
    uint64_t memory_bytes { 0 }; // physical RAM (sysinfo totalram)
    uint32_t cpus { 0 };         // CPUs this process may run on (its affinity mask)
};

// The host as this process sees it; a value that cannot be read is 0 (and then not compared).
HostCapacity read_host_capacity();

// One line per resource the machine asks more of than `host` has; empty when it fits.
std::vector<std::string> host_capacity_warnings(VmConfig const& config, HostCapacity const& host);

} // namespace kvmm

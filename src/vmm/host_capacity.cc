#include "vmm/host_capacity.h"

#include <fmt/format.h>

#include <sched.h>
#include <sys/sysinfo.h>

namespace kvmm {

HostCapacity read_host_capacity() {
    HostCapacity host;
    struct sysinfo info {};
    if (::sysinfo(&info) == 0)
        host.memory_bytes = static_cast<uint64_t>(info.totalram) * info.mem_unit;
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof(allowed), &allowed) == 0)
        host.cpus = static_cast<uint32_t>(CPU_COUNT(&allowed));
    return host;
}

std::vector<std::string> host_capacity_warnings(VmConfig const& config, HostCapacity const& host) {
    std::vector<std::string> warnings;
    if (host.memory_bytes != 0 && config.memory_size > host.memory_bytes)
        warnings.push_back(fmt::format("guest memory {} MiB is more than this host's RAM ({} MiB): the guest runs, but "
                                       "if it uses its memory the host swaps or its OOM killer ends the VM",
                                       config.memory_size >> 20, host.memory_bytes >> 20));
    if (host.cpus != 0 && config.vcpu_count > host.cpus)
        warnings.push_back(fmt::format("{} vCPUs are more than the {} host CPUs this process may run on: vCPUs share "
                                       "CPUs, and a guest that spins on a lock held by a descheduled vCPU slows down",
                                       config.vcpu_count, host.cpus));
    return warnings;
}

} // namespace kvmm

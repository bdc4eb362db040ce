// CPUID for a vCPU: the hypervisor's supported leaves, adjusted so that every
// vCPU reports one consistent topology - one package, vcpu_count / threads_per_core
// cores of threads_per_core threads (1, or 2 for Firecracker's smt: consecutive
// vCPUs are siblings), APIC ID = vCPU index - in leaves 0x1, 0x4, 0xB and 0x1F
// (Intel SDM vol. 2A, CPUID; vol. 3A 8.9 "Programming considerations for
// hardware multi-threading capable processors"). The KVM paravirtual leaves
// (0x40000000 and up: signature, kvmclock features) pass through unchanged.
#pragma once

#include "hypervisor/x86_state.h"

#include <span>
#include <vector>

namespace kvmm::x86_64 {

// `threads_per_core` must divide `vcpu_count` (or vcpu_count is 1); VmConfig's validation checks it.
std::vector<CpuidEntry> build_cpuid(std::span<CpuidEntry const> supported, uint32_t vcpu_index, uint32_t vcpu_count,
                                    uint32_t threads_per_core = 1);

} // namespace kvmm::x86_64

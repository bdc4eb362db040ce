// CPUID for a vCPU: the hypervisor's supported leaves, adjusted so that every
// vCPU reports one consistent topology - one package, vcpu_count cores, one
// thread per core, APIC ID = vCPU index - in leaves 0x1, 0x4, 0xB and 0x1F
// (Intel SDM vol. 2A, CPUID; vol. 3A 8.9 "Programming considerations for
// hardware multi-threading capable processors"). The KVM paravirtual leaves
// (0x40000000 and up: signature, kvmclock features) pass through unchanged.
#pragma once

#include "hypervisor/x86_state.h"

#include <span>
#include <vector>

namespace kvmm::x86_64 {

std::vector<CpuidEntry> build_cpuid(std::span<CpuidEntry const> supported, uint32_t vcpu_index, uint32_t vcpu_count);

} // namespace kvmm::x86_64

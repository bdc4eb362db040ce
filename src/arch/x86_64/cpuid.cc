#include "arch/x86_64/cpuid.h"

#include <algorithm>
#include <bit>

namespace kvmm::x86_64 {

namespace {

constexpr uint32_t SIGNIFICANT_INDEX = 1; // KVM_CPUID_FLAG_SIGNIFCANT_INDEX
constexpr uint32_t LEVEL_TYPE_SMT = 1;
constexpr uint32_t LEVEL_TYPE_CORE = 2;

// Bits of APIC ID needed to number `count` items: ceil(log2(count)).
uint32_t id_bits(uint32_t count) { return count <= 1 ? 0 : static_cast<uint32_t>(std::bit_width(count - 1)); }

void append_extended_topology(std::vector<CpuidEntry>& entries, uint32_t leaf, uint32_t vcpu_index, uint32_t vcpu_count,
                              uint32_t threads) {
    // Subleaf 0: SMT level, `threads` per core (EAX: APIC ID bits below the core ID). Subleaf 1:
    // core level, all vCPUs in one package (EAX: bits below the package ID, which for an even
    // count is the SMT bit plus the core bits). Subleaf 2: invalid level, ending the
    // enumeration. EDX: x2APIC ID everywhere.
    entries.push_back(
        CpuidEntry { leaf, 0, SIGNIFICANT_INDEX, id_bits(threads), threads, (LEVEL_TYPE_SMT << 8) | 0, vcpu_index });
    entries.push_back(CpuidEntry { leaf, 1, SIGNIFICANT_INDEX, id_bits(vcpu_count), vcpu_count,
                                   (LEVEL_TYPE_CORE << 8) | 1, vcpu_index });
    entries.push_back(CpuidEntry { leaf, 2, SIGNIFICANT_INDEX, 0, 0, 2, vcpu_index });
}

} // namespace

std::vector<CpuidEntry> build_cpuid(std::span<CpuidEntry const> supported, uint32_t vcpu_index, uint32_t vcpu_count,
                                    uint32_t threads_per_core) {
    // One vCPU is one thread whatever was asked (Firecracker allows smt with one vCPU).
    uint32_t const threads = vcpu_count > 1 ? std::max(threads_per_core, 1u) : 1u;
    std::vector<CpuidEntry> entries;
    entries.reserve(supported.size() + 6);
    bool has_leaf_1f = false;
    for (auto entry : supported) {
        switch (entry.function) {
        case 0x1:
            // EBX[31:24] initial APIC ID, EBX[23:16] addressable logical processors.
            entry.ebx = (entry.ebx & 0x0000ffff) | (vcpu_index << 24) | ((vcpu_count & 0xff) << 16);
            if (vcpu_count > 1)
                entry.edx |= 1u << 28; // HTT: the package has more than one logical processor
            else
                entry.edx &= ~(1u << 28);
            entry.ecx |= 1u << 31; // running under a hypervisor
            break;
        case 0x4: {
            // EAX[31:26]: addressable core IDs in the package minus one. EAX[25:14]: logical
            // processors sharing this cache minus one: a core's threads for L1/L2, the package
            // for L3.
            uint32_t const cache_level = (entry.eax >> 5) & 0x7;
            uint32_t const cores = (1u << id_bits(vcpu_count / threads)) - 1;
            uint32_t const package = (1u << id_bits(vcpu_count)) - 1;
            uint32_t const sharing = cache_level >= 3 ? package : (1u << id_bits(threads)) - 1;
            entry.eax = (entry.eax & 0x00003fff) | ((cores & 0x3f) << 26) | ((sharing & 0xfff) << 14);
            break;
        }
        case 0xb:
            continue; // rebuilt below
        case 0x1f:
            has_leaf_1f = true;
            continue;
        default:
            break;
        }
        entries.push_back(entry);
    }
    append_extended_topology(entries, 0xb, vcpu_index, vcpu_count, threads);
    if (has_leaf_1f)
        append_extended_topology(entries, 0x1f, vcpu_index, vcpu_count, threads);
    return entries;
}

} // namespace kvmm::x86_64

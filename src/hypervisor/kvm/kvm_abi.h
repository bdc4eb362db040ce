// C-layout replacements for the KVM uapi structures that end in a flexible
// array. Debian 12's <linux/kvm.h> declares those arrays with
// __DECLARE_FLEX_ARRAY, which in C++ inserts an empty struct member: `entries`
// then sits at offset 12 (kvm_cpuid2) or 16 (kvm_msrs) instead of 8, and the
// ioctl numbers derived from sizeof() change too, so the kernel rejects them.
// We build those tables ourselves with the kernel's real (C) layout.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

namespace kvmm::kvm_abi {

struct CpuidTableHeader {
    __u32 nent;
    __u32 padding;
};
static_assert(sizeof(CpuidTableHeader) == 8);

struct MsrTableHeader {
    __u32 nmsrs;
    __u32 pad;
};
static_assert(sizeof(MsrTableHeader) == 8);

struct IrqRoutingHeader {
    __u32 nr;
    __u32 flags;
};
static_assert(sizeof(IrqRoutingHeader) == 8);

// kvm_msr_list and kvm_xsave end in flexible arrays too.
struct MsrListHeader {
    __u32 nmsrs;
};
static_assert(sizeof(MsrListHeader) == 4);

struct XsaveArea {
    __u32 region[1024];
};
static_assert(sizeof(XsaveArea) == 4096);

inline constexpr unsigned long GET_MSR_INDEX_LIST = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long GET_MSRS = _IOWR(KVMIO, 0x88, MsrTableHeader);
inline constexpr unsigned long GET_CPUID2 = _IOWR(KVMIO, 0x91, CpuidTableHeader);
inline constexpr unsigned long GET_XSAVE = _IOR(KVMIO, 0xa4, XsaveArea);
inline constexpr unsigned long SET_XSAVE = _IOW(KVMIO, 0xa5, XsaveArea);
inline constexpr unsigned long GET_XSAVE2 = _IOR(KVMIO, 0xcf, XsaveArea);
inline constexpr unsigned long GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, CpuidTableHeader);
inline constexpr unsigned long SET_CPUID2 = _IOW(KVMIO, 0x90, CpuidTableHeader);
inline constexpr unsigned long SET_MSRS = _IOW(KVMIO, 0x89, MsrTableHeader);
inline constexpr unsigned long SET_GSI_ROUTING = _IOW(KVMIO, 0x6a, IrqRoutingHeader);

// A header followed by `count` entries, contiguous and suitably aligned, as the kernel expects.
template <typename Header, typename Entry>
class Table {
public:
    // operator new[] never returns null, which lets the compiler see that header() is valid.
    explicit Table(size_t count)
        : m_storage(std::make_unique<uint64_t[]>((sizeof(Header) + count * sizeof(Entry) + 7) / 8)) {}
    Header* header() { return reinterpret_cast<Header*>(m_storage.get()); }
    Entry* entries() {
        return reinterpret_cast<Entry*>(reinterpret_cast<std::byte*>(m_storage.get()) + sizeof(Header));
    }
    void* data() { return m_storage.get(); }

private:
    std::unique_ptr<uint64_t[]> m_storage; // uint64_t for 8-byte alignment of the entries
};

using CpuidTable = Table<CpuidTableHeader, kvm_cpuid_entry2>;
using MsrTable = Table<MsrTableHeader, kvm_msr_entry>;
using MsrList = Table<MsrListHeader, __u32>;
using IrqRoutingTable = Table<IrqRoutingHeader, kvm_irq_routing_entry>;

} // namespace kvmm::kvm_abi

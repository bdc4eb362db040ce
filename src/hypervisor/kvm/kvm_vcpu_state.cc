// KvmVcpu's saved state: which KVM calls save and restore a vCPU, in which order, and why
// (the kernel's Documentation/virt/kvm/api.rst and the checks in arch/x86/kvm/x86.c).
//
// Save, with every vCPU of the VM stopped:
//  0. Finish the instruction of the last exit: a port or MMIO access that exited to user
//     space completes only on the next KVM_RUN, and what is left of it is not in any state
//     user space can read (api.rst, KVM_RUN). KVM_RUN with immediate_exit set completes it
//     and returns without running further guest code; without it a restored vCPU would
//     repeat an OUT or lose an IN's data.
//  1. KVM_GET_MP_STATE first: it makes the LAPIC accept a pending INIT or SIPI, which can
//     change the registers, segments and LAPIC that are read after it.
//  2. Registers, special registers (with the injected-interrupt bitmap), XSAVE area, XCRs,
//     debug registers, the LAPIC (KVM_GET_LAPIC folds posted interrupts into IRR first), the
//     MSRs KVM_GET_MSR_INDEX_LIST names (the TSC, TSC deadline and kvmclock MSRs among
//     them), the CPUID table.
//  3. KVM_GET_VCPU_EVENTS last: the pending exception, interrupt, NMI and SMI as the reads
//     before it left them.
//
// Restore, into this vCPU or a fresh one (the VM's own state restored first, vm.h):
//  1. CPUID first: KVM checks XCR0, the XSAVE area's features, the x2APIC bit of APIC_BASE
//     and several MSRs against the vCPU's CPUID. A vCPU that has run accepts only the CPUID
//     it has (Linux 5.16 on), so an identical table is not set again.
//  2. Registers, special registers, XSAVE, XCRs, debug registers.
//  3. LAPIC after the special registers: APIC_BASE (in them) selects xAPIC or x2APIC mode,
//     which decides how KVM reads the LAPIC's ID register.
//  4. MSRs after the LAPIC: KVM ignores a TSC-deadline write unless the LAPIC timer is in
//     TSC-deadline mode. KVM_SET_MSRS writes in array order; the TSC goes first and the TSC
//     deadline last, since the deadline is a guest TSC value that KVM arms its timer
//     against the guest TSC of the moment.
//  5. MP state after the special registers (setting them makes a BSP at the reset vector
//     runnable, which would undo a saved INIT_RECEIVED) and before the events, which KVM
//     checks against it (SMM is refused in INIT_RECEIVED).
//  6. vCPU events last: KVM_SET_REGS drops a pending exception and KVM_SET_SREGS injects the
//     interrupt of its bitmap, so the events put back exactly the saved ones after them.
//
// Threading: as Vcpu::save_state/restore_state (vcpu.h): the vCPU's thread, VM paused.
#include "hypervisor/kvm/kvm_abi.h"
#include "hypervisor/kvm/kvm_vcpu.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <linux/kvm.h>
#include <sys/ioctl.h>

namespace kvmm {

namespace {

constexpr uint32_t MSR_IA32_TSC = 0x10;
constexpr uint32_t MSR_IA32_TSC_DEADLINE = 0x6e0;

static_assert(KVM_MP_STATE_RUNNABLE == static_cast<uint32_t>(X86MpState::Runnable));
static_assert(KVM_MP_STATE_UNINITIALIZED == static_cast<uint32_t>(X86MpState::Uninitialized));
static_assert(KVM_MP_STATE_INIT_RECEIVED == static_cast<uint32_t>(X86MpState::InitReceived));
static_assert(KVM_MP_STATE_HALTED == static_cast<uint32_t>(X86MpState::Halted));
static_assert(KVM_MP_STATE_SIPI_RECEIVED == static_cast<uint32_t>(X86MpState::SipiReceived));
static_assert(KVM_MP_STATE_AP_RESET_HOLD == static_cast<uint32_t>(X86MpState::ApResetHold));
static_assert(KVM_MP_STATE_SUSPENDED == static_cast<uint32_t>(X86MpState::Suspended));

// The XSAVE area as the kernel reads and writes it: `size` bytes, 8-byte aligned.
class XsaveBuffer {
public:
    explicit XsaveBuffer(size_t size) : m_words((size + 7) / 8), m_size(size) {}
    void* data() { return m_words.data(); }
    std::span<uint8_t> bytes() { return { reinterpret_cast<uint8_t*>(m_words.data()), m_size }; }

private:
    std::vector<uint64_t> m_words;
    size_t m_size;
};

X86VcpuEvents from_kvm(kvm_vcpu_events const& events) {
    X86VcpuEvents result;
    result.exception_injected = events.exception.injected;
    result.exception_vector = events.exception.nr;
    result.exception_has_error_code = events.exception.has_error_code;
    result.exception_pending = events.exception.pending;
    result.exception_error_code = events.exception.error_code;
    if (events.flags & KVM_VCPUEVENT_VALID_PAYLOAD) {
        result.exception_has_payload = events.exception_has_payload;
        result.exception_payload = events.exception_payload;
    }
    result.interrupt_injected = events.interrupt.injected;
    result.interrupt_vector = events.interrupt.nr;
    result.interrupt_soft = events.interrupt.soft;
    result.interrupt_shadow = events.interrupt.shadow;
    result.nmi_injected = events.nmi.injected;
    result.nmi_pending = events.nmi.pending;
    result.nmi_masked = events.nmi.masked;
    result.sipi_vector = events.sipi_vector;
    result.smm = events.smi.smm;
    result.smi_pending = events.smi.pending;
    result.smm_inside_nmi = events.smi.smm_inside_nmi;
    result.latched_init = events.smi.latched_init;
    if (events.flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT)
        result.triple_fault_pending = events.triple_fault.pending;
    return result;
}

kvm_vcpu_events to_kvm(X86VcpuEvents const& events) {
    kvm_vcpu_events result {};
    result.exception.injected = events.exception_injected;
    result.exception.nr = events.exception_vector;
    result.exception.has_error_code = events.exception_has_error_code;
    result.exception.pending = events.exception_pending;
    result.exception.error_code = events.exception_error_code;
    result.interrupt.injected = events.interrupt_injected;
    result.interrupt.nr = events.interrupt_vector;
    result.interrupt.soft = events.interrupt_soft;
    result.interrupt.shadow = events.interrupt_shadow;
    result.nmi.injected = events.nmi_injected;
    result.nmi.pending = events.nmi_pending;
    result.nmi.masked = events.nmi_masked;
    result.sipi_vector = events.sipi_vector;
    result.smi.smm = events.smm;
    result.smi.pending = events.smi_pending;
    result.smi.smm_inside_nmi = events.smm_inside_nmi;
    result.smi.latched_init = events.latched_init;
    result.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SHADOW |
                   KVM_VCPUEVENT_VALID_SMM;
    // Payloads and a pending triple fault exist only where the VM enabled them, and kvmm does
    // not: check_restorable() refuses them, so these flags stay clear.
    return result;
}

} // namespace

Expected<void> KvmVcpu::finish_pending_instruction() {
    int const previous = __atomic_load_n(&m_run->immediate_exit, __ATOMIC_SEQ_CST);
    __atomic_store_n(&m_run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    int const result = ::ioctl(m_fd.get(), KVM_RUN, 0);
    int const error_number = errno;
    __atomic_store_n(&m_run->immediate_exit, previous, __ATOMIC_SEQ_CST);
    if (result == 0)
        // Completing the access produced another exit (string I/O continues in pieces).
        return Error::format("vCPU {}: its last instruction needs another exit ({}) to finish; run it to an "
                             "instruction boundary before saving",
                             m_index, m_run->exit_reason);
    if (error_number != EINTR && error_number != EAGAIN)
        return Error::from_errno(fmt::format("KVM_RUN (immediate exit) on vCPU {}", m_index), error_number);
    return {};
}

Expected<std::vector<MsrEntry>> KvmVcpu::saveable_msrs() const {
    // KVM_GET_MSRS stops at the first MSR it cannot read and returns how many it read. A
    // listed MSR can be unreadable for this vCPU (its CPUID lacks the feature): skip it.
    auto const& indexes = m_support->saveable_msrs;
    std::vector<MsrEntry> result;
    result.reserve(indexes.size());
    size_t start = 0;
    while (start < indexes.size()) {
        size_t const count = indexes.size() - start;
        kvm_abi::MsrTable table(count);
        table.header()->nmsrs = static_cast<uint32_t>(count);
        for (size_t i = 0; i < count; ++i)
            table.entries()[i] = kvm_msr_entry { indexes[start + i], 0, 0 };
        int const read = ::ioctl(m_fd.get(), kvm_abi::GET_MSRS, table.data());
        if (read < 0)
            return Error::from_errno(fmt::format("KVM_GET_MSRS on vCPU {}", m_index));
        for (size_t i = 0; i < static_cast<size_t>(read) && i < count; ++i)
            result.push_back(MsrEntry { table.entries()[i].index, table.entries()[i].data });
        start += static_cast<size_t>(read) + 1; // past the one it could not read
    }
    return result;
}

Expected<std::vector<CpuidEntry>> KvmVcpu::current_cpuid() const {
    kvm_abi::CpuidTable table(X86VcpuState::MAX_CPUID_ENTRIES);
    table.header()->nent = X86VcpuState::MAX_CPUID_ENTRIES;
    if (::ioctl(m_fd.get(), kvm_abi::GET_CPUID2, table.data()) != 0)
        return Error::from_errno(fmt::format("KVM_GET_CPUID2 on vCPU {}", m_index));
    std::vector<CpuidEntry> entries;
    entries.reserve(table.header()->nent);
    for (uint32_t i = 0; i < table.header()->nent && i < X86VcpuState::MAX_CPUID_ENTRIES; ++i) {
        auto const& entry = table.entries()[i];
        entries.push_back(
            CpuidEntry { entry.function, entry.index, entry.flags, entry.eax, entry.ebx, entry.ecx, entry.edx });
    }
    return entries;
}

Expected<X86VcpuState> KvmVcpu::save_state() {
    if (!m_support->unavailable.empty())
        return Error::format("vCPU {}: its state cannot be saved on this host: {}", m_index, m_support->unavailable);
    TRY(finish_pending_instruction());
    return read_state();
}

Expected<X86VcpuState> KvmVcpu::read_state() {
    X86VcpuState state;

    kvm_mp_state mp_state {};
    if (::ioctl(m_fd.get(), KVM_GET_MP_STATE, &mp_state) != 0)
        return Error::from_errno("KVM_GET_MP_STATE");
    state.mp_state = static_cast<X86MpState>(mp_state.mp_state);

    state.registers = TRY(registers());
    state.special_registers = TRY(read_special_registers(&state.interrupt_bitmap));

    XsaveBuffer xsave(m_support->xsave_size);
    if (::ioctl(m_fd.get(), m_support->has_xsave2 ? kvm_abi::GET_XSAVE2 : kvm_abi::GET_XSAVE, xsave.data()) != 0)
        return Error::from_errno(m_support->has_xsave2 ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE");
    state.xsave.assign(xsave.bytes().begin(), xsave.bytes().end());

    kvm_xcrs xcrs {};
    if (::ioctl(m_fd.get(), KVM_GET_XCRS, &xcrs) != 0)
        return Error::from_errno("KVM_GET_XCRS");
    for (uint32_t i = 0; i < xcrs.nr_xcrs && i < KVM_MAX_XCRS; ++i)
        state.xcrs.push_back(XcrEntry { xcrs.xcrs[i].xcr, xcrs.xcrs[i].value });

    kvm_debugregs debug {};
    if (::ioctl(m_fd.get(), KVM_GET_DEBUGREGS, &debug) != 0)
        return Error::from_errno("KVM_GET_DEBUGREGS");
    std::copy(std::begin(debug.db), std::end(debug.db), state.debug_registers.address.begin());
    state.debug_registers.dr6 = debug.dr6;
    state.debug_registers.dr7 = debug.dr7;

    state.lapic = TRY(lapic());
    state.msrs = TRY(saveable_msrs());
    state.cpuid = TRY(current_cpuid());

    kvm_vcpu_events events {};
    if (::ioctl(m_fd.get(), KVM_GET_VCPU_EVENTS, &events) != 0)
        return Error::from_errno("KVM_GET_VCPU_EVENTS");
    state.events = from_kvm(events);
    return state;
}

Expected<void> KvmVcpu::check_restorable(X86VcpuState const& state) const {
    if (!m_support->unavailable.empty())
        return Error::format("vCPU {}: its state cannot be restored on this host: {}", m_index, m_support->unavailable);
    TRY(state.check());
    if (state.xsave.size() != m_support->xsave_size)
        return Error::format("vcpu state xsave: {} bytes, this host's XSAVE area has {}", state.xsave.size(),
                             m_support->xsave_size);
    for (size_t i = 0; i < state.xcrs.size(); ++i) {
        if (state.xcrs[i].index != 0)
            return Error::format("vcpu state xcrs[{}]: XCR{} is not one KVM has (only XCR0)", i, state.xcrs[i].index);
    }
    auto saveable = m_support->saveable_msrs;
    std::sort(saveable.begin(), saveable.end());
    std::vector<uint32_t> seen;
    for (size_t i = 0; i < state.msrs.size(); ++i) {
        uint32_t const index = state.msrs[i].index;
        if (!std::binary_search(saveable.begin(), saveable.end(), index))
            return Error::format("vcpu state msrs[{}]: MSR {:#x} is not one this host's KVM saves", i, index);
        if (std::find(seen.begin(), seen.end(), index) != seen.end())
            return Error::format("vcpu state msrs[{}]: MSR {:#x} is listed twice", i, index);
        seen.push_back(index);
    }
    if (state.events.exception_has_payload)
        return Error("vcpu state events.exception_has_payload: this VM does not carry exception payloads");
    if (state.events.triple_fault_pending)
        return Error("vcpu state events.triple_fault_pending: this VM does not carry pending triple faults");
    return {};
}

Expected<void> KvmVcpu::restore_state(X86VcpuState const& state) {
    TRY(check_restorable(state));
    // KVM can still refuse a value half-way (an MSR value it does not accept): then the state
    // read here is put back, so that a refused restore leaves the vCPU as it was.
    auto const previous = TRY(read_state());
    auto applied = apply_state(state);
    if (applied)
        return {};
    if (auto undone = apply_state(previous); !undone)
        return Error::format("{}; putting the vCPU's previous state back failed too: {}", applied.error().message(),
                             undone.error().message());
    return applied;
}

Expected<void> KvmVcpu::apply_state(X86VcpuState const& state) {
    if (TRY(current_cpuid()) != state.cpuid)
        TRY(set_cpuid(state.cpuid));

    TRY(set_registers(state.registers));
    TRY(write_special_registers(state.special_registers, &state.interrupt_bitmap));

    XsaveBuffer xsave(m_support->xsave_size);
    std::memcpy(xsave.data(), state.xsave.data(), state.xsave.size());
    if (::ioctl(m_fd.get(), kvm_abi::SET_XSAVE, xsave.data()) != 0)
        return Error::from_errno(fmt::format("KVM_SET_XSAVE on vCPU {}", m_index));

    kvm_xcrs xcrs {};
    xcrs.nr_xcrs = static_cast<uint32_t>(state.xcrs.size());
    for (size_t i = 0; i < state.xcrs.size(); ++i) {
        xcrs.xcrs[i].xcr = state.xcrs[i].index;
        xcrs.xcrs[i].value = state.xcrs[i].value;
    }
    if (::ioctl(m_fd.get(), KVM_SET_XCRS, &xcrs) != 0)
        return Error::from_errno(fmt::format("KVM_SET_XCRS on vCPU {}", m_index));

    kvm_debugregs debug {};
    std::copy(state.debug_registers.address.begin(), state.debug_registers.address.end(), std::begin(debug.db));
    debug.dr6 = state.debug_registers.dr6;
    debug.dr7 = state.debug_registers.dr7;
    if (::ioctl(m_fd.get(), KVM_SET_DEBUGREGS, &debug) != 0)
        return Error::from_errno(fmt::format("KVM_SET_DEBUGREGS on vCPU {}", m_index));

    TRY(set_lapic(state.lapic));

    std::vector<MsrEntry> msrs;
    msrs.reserve(state.msrs.size());
    auto add_where = [&](auto keep) {
        for (auto const& msr : state.msrs)
            if (keep(msr.index))
                msrs.push_back(msr);
    };
    add_where([](uint32_t index) { return index == MSR_IA32_TSC; });
    add_where([](uint32_t index) { return index != MSR_IA32_TSC && index != MSR_IA32_TSC_DEADLINE; });
    add_where([](uint32_t index) { return index == MSR_IA32_TSC_DEADLINE; });
    TRY(set_msrs(msrs));

    // After the special registers, which make a BSP at the reset vector runnable again
    // (KVM's __set_sregs), and before the events, which KVM checks against it (SMM).
    kvm_mp_state mp_state { static_cast<uint32_t>(state.mp_state) };
    if (::ioctl(m_fd.get(), KVM_SET_MP_STATE, &mp_state) != 0)
        return Error::from_errno(fmt::format("KVM_SET_MP_STATE {} on vCPU {}", mp_state.mp_state, m_index));

    auto events = to_kvm(state.events);
    if (::ioctl(m_fd.get(), KVM_SET_VCPU_EVENTS, &events) != 0)
        return Error::from_errno(fmt::format("KVM_SET_VCPU_EVENTS on vCPU {}", m_index));
    return {};
}

} // namespace kvmm

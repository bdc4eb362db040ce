// Hypervisor-neutral x86-64 vCPU and VM state: what the arch layer computes for
// boot, what a register dump prints, and the saved state of the hypervisor
// objects (X86VcpuState, X86VmState; docs/ARCHITECTURE.md "Saved state"). The KVM
// backend translates to and from its own structures; nothing here depends on
// <linux/kvm.h>.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace kvmm {

struct X86Registers {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;

    bool operator==(X86Registers const&) const = default;
};

struct X86Segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type, present, dpl, db, s, l, g, avl;
    uint8_t unusable;

    bool operator==(X86Segment const&) const = default;
};

struct X86DescriptorTable {
    uint64_t base;
    uint16_t limit;

    bool operator==(X86DescriptorTable const&) const = default;
};

struct X86SpecialRegisters {
    X86Segment cs, ds, es, fs, gs, ss, tr, ldt;
    X86DescriptorTable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;

    bool operator==(X86SpecialRegisters const&) const = default;
};

// One CPUID leaf/subleaf as the hypervisor reports and accepts it.
struct CpuidEntry {
    uint32_t function;
    uint32_t index;
    uint32_t flags; // bit 0: the leaf is indexed by ECX (KVM_CPUID_FLAG_SIGNIFCANT_INDEX)
    uint32_t eax, ebx, ecx, edx;

    bool operator==(CpuidEntry const&) const = default;
};

struct MsrEntry {
    uint32_t index;
    uint64_t value;

    bool operator==(MsrEntry const&) const = default;
};

// The local APIC register page (4 KiB in hardware, 1 KiB as KVM exposes it).
struct LapicState {
    std::array<uint8_t, 1024> registers {};

    bool operator==(LapicState const&) const = default;
};

// Debug registers DR0-DR3, DR6 and DR7.
struct X86DebugRegisters {
    std::array<uint64_t, 4> address {};
    uint64_t dr6 { 0 };
    uint64_t dr7 { 0 };

    bool operator==(X86DebugRegisters const&) const = default;
};

// One extended control register (XCR0 is the only one defined so far).
struct XcrEntry {
    uint32_t index;
    uint64_t value;

    bool operator==(XcrEntry const&) const = default;
};

// The multiprocessor run state of a vCPU (the values are the ones KVM uses on x86).
enum class X86MpState : uint32_t {
    Runnable = 0,
    Uninitialized = 1, // an application processor waiting for INIT
    InitReceived = 2,  // waiting for SIPI
    Halted = 3,
    SipiReceived = 4,
    ApResetHold = 9, // AMD SEV-ES: parked by the guest until the next SIPI
    Suspended = 10,
};

// Events pending or being delivered when the vCPU stopped: an exception, an external
// interrupt, an NMI, SMM and a latched INIT. Together with the registers they describe
// the instruction boundary the vCPU resumes at.
struct X86VcpuEvents {
    uint8_t exception_injected { 0 };
    uint8_t exception_vector { 0 };
    uint8_t exception_has_error_code { 0 };
    uint8_t exception_pending { 0 };
    uint32_t exception_error_code { 0 };
    uint8_t exception_has_payload { 0 };
    uint64_t exception_payload { 0 }; // e.g. the faulting address of a #PF not yet in CR2
    uint8_t interrupt_injected { 0 };
    uint8_t interrupt_vector { 0 };
    uint8_t interrupt_soft { 0 };
    uint8_t interrupt_shadow { 0 }; // blocked by STI or MOV SS
    uint8_t nmi_injected { 0 };
    uint8_t nmi_pending { 0 };
    uint8_t nmi_masked { 0 };
    uint32_t sipi_vector { 0 };
    uint8_t smm { 0 };
    uint8_t smi_pending { 0 };
    uint8_t smm_inside_nmi { 0 };
    uint8_t latched_init { 0 };
    uint8_t triple_fault_pending { 0 };

    bool operator==(X86VcpuEvents const&) const = default;
};

// Everything a vCPU needs to carry on where it stopped, on the same kind of host: saved
// by Vcpu::save_state() and put back, into the same vCPU or a fresh one of a VM built the
// same way, by Vcpu::restore_state(). Hypervisor-neutral; the backends translate.
struct X86VcpuState {
    static constexpr std::string_view SECTION = "vcpu";
    static constexpr uint32_t VERSION = 1;
    // Bounds of the variable parts (a blob is untrusted input): KVM has at most 256 CPUID
    // entries and 16 XCRs; no host reports a thousand saveable MSRs; the largest XSAVE area
    // of today's CPUs (AMX) is about 11 KiB.
    static constexpr size_t MAX_CPUID_ENTRIES = 256;
    static constexpr size_t MAX_XCRS = 16;
    static constexpr size_t MAX_MSRS = 1024;
    static constexpr size_t MAX_XSAVE_SIZE = 64 * 1024;

    X86MpState mp_state { X86MpState::Runnable };
    X86Registers registers {};
    X86SpecialRegisters special_registers {};
    // The external interrupt being injected, one bit per vector (at most one bit set).
    std::array<uint64_t, 4> interrupt_bitmap {};
    // The x87/SSE/AVX... state in the standard (non-compacted) XSAVE layout of the host;
    // its size is fixed per host and checked on restore.
    std::vector<uint8_t> xsave {};
    std::vector<XcrEntry> xcrs {};
    X86DebugRegisters debug_registers {};
    LapicState lapic {};
    // Every MSR the hypervisor can save for this vCPU (on KVM, the list it reports as
    // saveable), including the TSC, the TSC deadline and the kvmclock MSRs.
    std::vector<MsrEntry> msrs {};
    std::vector<CpuidEntry> cpuid {};
    X86VcpuEvents events {};

    bool operator==(X86VcpuState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<X86VcpuState> decode(StateReader& reader);
    // The checks every backend's restore_state() makes before it touches anything: counts
    // within the bounds above, known enumerations, vectors in range. Names the field.
    Expected<void> check() const;
};

// One 8259A programmable interrupt controller.
struct PicState {
    uint8_t last_irr { 0 }, irr { 0 }, imr { 0 }, isr { 0 }, priority_add { 0 }, irq_base { 0 };
    uint8_t read_reg_select { 0 }, poll { 0 }, special_mask { 0 }, init_state { 0 }, auto_eoi { 0 };
    uint8_t rotate_on_auto_eoi { 0 }, special_fully_nested_mode { 0 }, init4 { 0 }, elcr { 0 }, elcr_mask { 0 };

    bool operator==(PicState const&) const = default;
};

// The I/O APIC (82093AA-compatible, 24 pins).
struct IoapicState {
    static constexpr size_t PINS = 24;
    uint64_t base_address { 0 };
    uint32_t register_select { 0 };
    uint32_t id { 0 };
    uint32_t irr { 0 };
    std::array<uint64_t, PINS> redirection_table {};

    bool operator==(IoapicState const&) const = default;
};

// One channel of the 8254 programmable interval timer.
struct PitChannelState {
    uint32_t count { 0 }; // the reload value, up to 65536
    uint16_t latched_count { 0 };
    uint8_t count_latched { 0 }, status_latched { 0 }, status { 0 }, read_state { 0 }, write_state { 0 };
    uint8_t write_latch { 0 }, rw_mode { 0 }, mode { 0 }, bcd { 0 }, gate { 0 };
    // When the count was loaded, on the host's monotonic clock (ns): the hypervisor reloads
    // the count on restore, so this moves then.
    int64_t count_load_time { 0 };

    bool operator==(PitChannelState const&) const = default;
};

struct PitState {
    std::array<PitChannelState, 3> channels {};
    bool hpet_legacy { false };     // channel 0 stopped: the HPET drives IRQ 0
    bool speaker_data_on { false }; // port 0x61 bit 1

    bool operator==(PitState const&) const = default;
};

// The paravirtual clock (kvmclock) the guest reads: nanoseconds since the VM started, as
// the guest sees them.
struct GuestClockState {
    uint64_t nanoseconds { 0 };

    bool operator==(GuestClockState const&) const = default;
};

// The VM-wide part of the machine state that lives in the hypervisor: the interrupt
// controllers outside the vCPUs (PIC pair, IOAPIC), the PIT and the guest clock.
struct X86VmState {
    static constexpr std::string_view SECTION = "vm";
    static constexpr uint32_t VERSION = 1;

    PicState pic_master {};
    PicState pic_slave {};
    IoapicState ioapic {};
    PitState pit {};
    GuestClockState clock {};

    bool operator==(X86VmState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<X86VmState> decode(StateReader& reader);
};

} // namespace kvmm

// Hypervisor-neutral x86-64 vCPU state: what the arch layer computes for boot
// and what a register dump prints. The KVM backend translates to and from its
// own structures; nothing here depends on <linux/kvm.h>.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace kvmm {

struct X86Registers {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
};

struct X86Segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type, present, dpl, db, s, l, g, avl;
    uint8_t unusable;
};

struct X86DescriptorTable {
    uint64_t base;
    uint16_t limit;
};

struct X86SpecialRegisters {
    X86Segment cs, ds, es, fs, gs, ss, tr, ldt;
    X86DescriptorTable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;
};

// One CPUID leaf/subleaf as the hypervisor reports and accepts it.
struct CpuidEntry {
    uint32_t function;
    uint32_t index;
    uint32_t flags; // bit 0: the leaf is indexed by ECX (KVM_CPUID_FLAG_SIGNIFCANT_INDEX)
    uint32_t eax, ebx, ecx, edx;
};

struct MsrEntry {
    uint32_t index;
    uint64_t value;
};

// The local APIC register page (4 KiB in hardware, 1 KiB as KVM exposes it).
struct LapicState {
    std::array<uint8_t, 1024> registers {};
};

} // namespace kvmm

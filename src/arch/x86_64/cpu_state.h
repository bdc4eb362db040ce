// Boot-time vCPU state: the GDT and identity page tables in guest memory, the
// register values each entry mode expects, the initial MSRs and LAPIC LVTs.
// Pure functions; the VMM applies the results to its vCPUs.
#pragma once

#include "arch/x86_64/kernel_loader.h"
#include "hypervisor/x86_state.h"
#include "memory/guest_memory.h"

#include <vector>

namespace kvmm::x86_64 {

// Selectors of the boot GDT written by write_boot_tables. Linux's 64-bit boot protocol
// expects __BOOT_CS = 0x10 and __BOOT_DS = 0x18 (boot.rst, "64-bit Boot Protocol").
inline constexpr uint16_t BOOT_CODE32_SELECTOR = 0x08;
inline constexpr uint16_t BOOT_CODE64_SELECTOR = 0x10;
inline constexpr uint16_t BOOT_DATA_SELECTOR = 0x18;
inline constexpr uint16_t BOOT_TSS_SELECTOR = 0x20;

// Writes the boot GDT, an empty IDT and page tables that identity-map the first 4 GiB
// with 2 MiB pages.
Expected<void> write_boot_tables(GuestMemory const& memory);

struct InitialCpuState {
    X86Registers registers;
    X86SpecialRegisters special_registers;
};

// Registers for the boot vCPU. `current` is the vCPU's reset state (kept where not set).
//  Pvh32: 32-bit protected mode, paging off, EBX = hvm_start_info (PVH ABI).
//  Linux64: long mode on the identity map, RSI = zero page (boot.rst).
InitialCpuState boot_cpu_state(BootInfo const& boot, X86SpecialRegisters const& current);

// The state of a processor after RESET (Intel SDM vol. 3, 9.1.4 "First Instruction Executed";
// AMD APM vol. 2, 14.1.3): real mode, CS selector 0xF000 with base 0xFFFF0000 and IP 0xFFF0,
// so the first fetch is at 0xFFFFFFF0, the firmware's reset vector. `current` supplies what
// is not architecturally fixed (the APIC base). EDX holds the processor signature (CPUID 1 EAX).
InitialCpuState reset_cpu_state(X86SpecialRegisters const& current, uint32_t processor_signature);

// The MSRs a fresh vCPU starts with.
std::vector<MsrEntry> boot_msrs();

// LVT LINT0 = ExtINT and LINT1 = NMI, the wiring of a PC (Intel SDM vol. 3, 10.5.1), so
// PIC interrupts and NMIs reach the processor as on real hardware.
void configure_lapic_lint(LapicState& lapic);

} // namespace kvmm::x86_64

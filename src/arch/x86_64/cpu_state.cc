#include "arch/x86_64/cpu_state.h"

#include "arch/x86_64/layout.h"

#include <array>
#include <cstring>

namespace kvmm::x86_64 {

namespace {

// Descriptor encodings (Intel SDM vol. 3, 3.4.5): flat 4 GiB, granularity 4 KiB.
constexpr uint64_t GDT_CODE32 = 0x00cf9b000000ffff; // present, DPL0, code exec/read accessed, D=1
constexpr uint64_t GDT_CODE64 = 0x00af9b000000ffff; // same with L=1, D=0
constexpr uint64_t GDT_DATA = 0x00cf93000000ffff;   // present, DPL0, data read/write accessed
constexpr uint64_t GDT_TSS = 0x00008b0000000067;    // present, 32-bit busy TSS, limit 0x67
constexpr std::array<uint64_t, 5> BOOT_GDT { 0, GDT_CODE32, GDT_CODE64, GDT_DATA, GDT_TSS };

constexpr uint64_t CR0_PE = 1ull << 0;
constexpr uint64_t CR0_ET = 1ull << 4;
constexpr uint64_t CR0_NE = 1ull << 5;
constexpr uint64_t CR0_PG = 1ull << 31;
constexpr uint64_t CR4_PAE = 1ull << 5;
constexpr uint64_t EFER_LME = 1ull << 8;
constexpr uint64_t EFER_LMA = 1ull << 10;

constexpr uint64_t PAGE_PRESENT_WRITABLE = 0x3;
constexpr uint64_t PAGE_LARGE = 0x80;

X86Segment segment(uint16_t selector, uint8_t type, bool long_mode, bool big) {
    X86Segment result {};
    result.base = 0;
    result.limit = 0xffffffff;
    result.selector = selector;
    result.type = type;
    result.present = 1;
    result.dpl = 0;
    result.db = big ? 1 : 0;
    result.s = 1;
    result.l = long_mode ? 1 : 0;
    result.g = 1;
    return result;
}

X86Segment task_segment() {
    X86Segment result {};
    result.limit = 0x67;
    result.selector = BOOT_TSS_SELECTOR;
    result.type = 0xb; // busy 32-bit TSS
    result.present = 1;
    return result;
}

} // namespace

Expected<void> write_boot_tables(GuestMemory const& memory) {
    TRY(memory.write(GuestAddress(BOOT_GDT_ADDRESS), std::as_bytes(std::span(BOOT_GDT))));
    TRY(memory.fill_zero(GuestAddress(BOOT_IDT_ADDRESS), 8));
    TRY(memory.write_obj<uint64_t>(GuestAddress(PML4_ADDRESS), PDPT_ADDRESS | PAGE_PRESENT_WRITABLE));
    for (uint64_t directory = 0; directory < 4; ++directory) {
        uint64_t const directory_address = PAGE_DIRECTORY_ADDRESS + directory * 4096;
        TRY(memory.write_obj<uint64_t>(GuestAddress(PDPT_ADDRESS + directory * 8),
                                       directory_address | PAGE_PRESENT_WRITABLE));
        std::array<uint64_t, 512> entries {};
        for (uint64_t i = 0; i < 512; ++i)
            entries[i] = ((directory * 512 + i) << 21) | PAGE_PRESENT_WRITABLE | PAGE_LARGE;
        TRY(memory.write(GuestAddress(directory_address), std::as_bytes(std::span(entries))));
    }
    return {};
}

InitialCpuState boot_cpu_state(BootInfo const& boot, X86SpecialRegisters const& current) {
    InitialCpuState state {};
    auto& registers = state.registers;
    auto& special = state.special_registers;
    special = current;
    registers.rflags = 0x2; // bit 1 is reserved and always set
    registers.rip = boot.entry.value();
    registers.rsp = BOOT_STACK_POINTER;
    special.gdt = X86DescriptorTable { BOOT_GDT_ADDRESS, static_cast<uint16_t>(sizeof(BOOT_GDT) - 1) };
    special.idt = X86DescriptorTable { BOOT_IDT_ADDRESS, 0 };
    special.tr = task_segment();
    auto const data = segment(BOOT_DATA_SELECTOR, 0x3, false, true);
    special.ds = special.es = special.fs = special.gs = special.ss = data;

    if (boot.mode == EntryMode::Pvh32) {
        // PVH ABI: protected mode, paging off, flat segments, EBX = start_info.
        special.cs = segment(BOOT_CODE32_SELECTOR, 0xb, false, true);
        special.cr0 = CR0_PE | CR0_ET;
        special.cr3 = 0;
        special.cr4 = 0;
        special.efer = 0;
        registers.rbx = boot.boot_params.value();
    } else {
        // 64-bit boot protocol: long mode, identity-mapped, __BOOT_CS/__BOOT_DS, RSI = zero page.
        special.cs = segment(BOOT_CODE64_SELECTOR, 0xb, true, false);
        special.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
        special.cr3 = PML4_ADDRESS;
        special.cr4 = CR4_PAE;
        special.efer = EFER_LME | EFER_LMA;
        registers.rsi = boot.boot_params.value();
    }
    return state;
}

// IA32_TSC is deliberately absent: KVM synchronises the TSCs of vCPUs created together, and
// writing 0 to each one at a different moment makes Linux mark the TSC unsynchronised.
InitialCpuState reset_cpu_state(X86SpecialRegisters const& current, uint32_t processor_signature) {
    InitialCpuState state {};
    state.special_registers = current;
    auto& special = state.special_registers;
    // Real-mode data segments: base 0, limit 64 KiB, read/write accessed (type 3).
    X86Segment data {};
    data.limit = 0xFFFF;
    data.type = 3;
    data.present = 1;
    data.s = 1;
    special.ds = special.es = special.fs = special.gs = special.ss = data;
    special.cs = data;
    special.cs.selector = 0xF000;
    special.cs.base = 0xFFFF'0000;
    special.cs.type = 0xB; // execute/read, accessed
    X86Segment system {};
    system.limit = 0xFFFF;
    system.present = 1;
    special.ldt = system;
    special.ldt.type = 2;
    special.tr = system;
    special.tr.type = 0xB; // busy 32-bit TSS
    special.gdt = X86DescriptorTable { 0, 0xFFFF };
    special.idt = X86DescriptorTable { 0, 0xFFFF };
    special.cr0 = 0x6000'0010; // CD, NW, ET
    special.cr2 = special.cr3 = special.cr4 = special.cr8 = 0;
    special.efer = 0;
    state.registers.rip = 0xFFF0;
    state.registers.rflags = 0x2;
    state.registers.rdx = processor_signature;
    return state;
}

std::vector<MsrEntry> boot_msrs() {
    return {
        { 0x174, 0 },             // IA32_SYSENTER_CS
        { 0x175, 0 },             // IA32_SYSENTER_ESP
        { 0x176, 0 },             // IA32_SYSENTER_EIP
        { 0xc0000081, 0 },        // STAR
        { 0xc0000082, 0 },        // LSTAR
        { 0xc0000083, 0 },        // CSTAR
        { 0xc0000084, 0 },        // SFMASK
        { 0xc0000102, 0 },        // KERNEL_GS_BASE
        { 0x10, 0 },              // IA32_TSC
        { 0x1a0, 1 },             // IA32_MISC_ENABLE: fast string operations
        { 0x2ff, (1 << 11) | 6 }, // IA32_MTRR_DEF_TYPE: MTRRs on, default write-back
    };
}

void configure_lapic_lint(LapicState& lapic) {
    constexpr size_t LVT_LINT0 = 0x350;
    constexpr size_t LVT_LINT1 = 0x360;
    constexpr uint32_t DELIVERY_MODE_MASK = 0x700;
    constexpr uint32_t DELIVERY_EXTINT = 0x700;
    constexpr uint32_t DELIVERY_NMI = 0x400;
    auto update = [&](size_t offset, uint32_t mode) {
        uint32_t value = 0;
        std::memcpy(&value, lapic.registers.data() + offset, sizeof(value));
        value = (value & ~DELIVERY_MODE_MASK) | mode;
        std::memcpy(lapic.registers.data() + offset, &value, sizeof(value));
    };
    update(LVT_LINT0, DELIVERY_EXTINT);
    update(LVT_LINT1, DELIVERY_NMI);
}

} // namespace kvmm::x86_64

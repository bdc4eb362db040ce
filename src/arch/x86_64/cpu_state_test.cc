#include "arch/x86_64/cpu_state.h"

#include "arch/x86_64/layout.h"

#include <gtest/gtest.h>

#include <cstring>

namespace kvmm::x86_64 {
namespace {

class CpuStateTest : public ::testing::Test {
protected:
    GuestMemory m_memory = [] { return MUST(GuestMemory::create({ { GuestAddress(0), 64 * MiB } })); }();
};

// Walks the 4-level page tables the way the MMU does for a 2 MiB mapping.
uint64_t translate(GuestMemory const& memory, uint64_t cr3, uint64_t virtual_address) {
    auto const pml4e = MUST(memory.read_obj<uint64_t>(GuestAddress(cr3 + ((virtual_address >> 39) & 511) * 8)));
    EXPECT_TRUE(pml4e & 1);
    auto const pdpte =
        MUST(memory.read_obj<uint64_t>(GuestAddress((pml4e & ~0xfffull) + ((virtual_address >> 30) & 511) * 8)));
    EXPECT_TRUE(pdpte & 1);
    auto const pde =
        MUST(memory.read_obj<uint64_t>(GuestAddress((pdpte & ~0xfffull) + ((virtual_address >> 21) & 511) * 8)));
    EXPECT_TRUE(pde & 0x81) << "present 2 MiB page";
    return (pde & ~0x1fffffull) + (virtual_address & 0x1fffff);
}

TEST_F(CpuStateTest, PageTablesIdentityMapFirstFourGib) {
    MUST(write_boot_tables(m_memory));
    for (uint64_t address : { 0ull, 0x100000ull, 0x12345678ull, 0xfee00000ull, 0xffffffffull })
        EXPECT_EQ(translate(m_memory, PML4_ADDRESS, address), address);
}

TEST_F(CpuStateTest, GdtHasLinuxBootSelectors) {
    MUST(write_boot_tables(m_memory));
    auto const code64 = MUST(m_memory.read_obj<uint64_t>(GuestAddress(BOOT_GDT_ADDRESS + BOOT_CODE64_SELECTOR)));
    auto const data = MUST(m_memory.read_obj<uint64_t>(GuestAddress(BOOT_GDT_ADDRESS + BOOT_DATA_SELECTOR)));
    EXPECT_TRUE(code64 & (1ull << 53)) << "L bit";
    EXPECT_TRUE(code64 & (1ull << 47)) << "present";
    EXPECT_EQ((data >> 40) & 0xf, 0x3u) << "read/write data";
}

TEST_F(CpuStateTest, Linux64StateIsLongModeWithZeroPageInRsi) {
    BootInfo const boot { EntryMode::Linux64, GuestAddress(0x100200), GuestAddress(ZERO_PAGE_ADDRESS) };
    auto const state = boot_cpu_state(boot, X86SpecialRegisters {});
    EXPECT_EQ(state.registers.rip, 0x100200u);
    EXPECT_EQ(state.registers.rsi, ZERO_PAGE_ADDRESS);
    EXPECT_EQ(state.special_registers.cs.selector, 0x10);
    EXPECT_EQ(state.special_registers.cs.l, 1);
    EXPECT_EQ(state.special_registers.ds.selector, 0x18);
    EXPECT_TRUE(state.special_registers.cr0 & (1ull << 31));
    EXPECT_EQ(state.special_registers.efer & 0x500, 0x500u);
    EXPECT_EQ(state.special_registers.cr3, PML4_ADDRESS);
}

TEST_F(CpuStateTest, PvhStateIsFlatProtectedModeWithStartInfoInRbx) {
    BootInfo const boot { EntryMode::Pvh32, GuestAddress(0x1000000), GuestAddress(PVH_START_INFO_ADDRESS) };
    X86SpecialRegisters current {};
    current.apic_base = 0xfee00900;
    auto const state = boot_cpu_state(boot, current);
    EXPECT_EQ(state.registers.rbx, PVH_START_INFO_ADDRESS);
    EXPECT_EQ(state.special_registers.cr0 & 0x80000001, 0x1u) << "PE on, paging off";
    EXPECT_EQ(state.special_registers.cs.db, 1);
    EXPECT_EQ(state.special_registers.cs.l, 0);
    EXPECT_EQ(state.special_registers.efer, 0u);
    EXPECT_EQ(state.special_registers.apic_base, 0xfee00900u);
    EXPECT_EQ(state.special_registers.tr.type, 0xb);
}

TEST(LapicLint, Lint0IsExtIntAndLint1IsNmi) {
    LapicState lapic {};
    uint32_t masked = 0x10000;
    std::memcpy(lapic.registers.data() + 0x350, &masked, 4);
    configure_lapic_lint(lapic);
    uint32_t lint0 = 0, lint1 = 0;
    std::memcpy(&lint0, lapic.registers.data() + 0x350, 4);
    std::memcpy(&lint1, lapic.registers.data() + 0x360, 4);
    EXPECT_EQ(lint0 & 0x700, 0x700u);
    EXPECT_EQ(lint0 & 0x10000, 0x10000u) << "other bits kept";
    EXPECT_EQ(lint1 & 0x700, 0x400u);
}

} // namespace
} // namespace kvmm::x86_64

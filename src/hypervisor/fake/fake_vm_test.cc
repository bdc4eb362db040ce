// Unit tests of the fake hypervisor's saved state: it keeps what it is given, so the layers
// above can round-trip vCPU and VM state without /dev/kvm, and it refuses what a real
// hypervisor would.
#include "hypervisor/fake/fake_vm.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

TEST(FakeVcpuState, SaveRestoreSaveGivesTheSameStateInAFreshVcpu) {
    FakeVm vm;
    auto vcpu = MUST(vm.create_vcpu(0));
    X86Registers registers {};
    registers.rip = 0x1234;
    registers.rbx = 99;
    MUST(vcpu->set_registers(registers));
    CpuidEntry const cpuid[] = { { 1, 0, 0, 0x800f12, 0, 0, 0 } };
    MUST(vcpu->set_cpuid(cpuid));
    MsrEntry const msrs[] = { { 0x10, 5000 }, { 0x6e0, 9000 } };
    MUST(vcpu->set_msrs(msrs));
    auto saved = MUST(vcpu->save_state());
    EXPECT_EQ(saved.registers.rip, 0x1234u);
    EXPECT_EQ(saved.cpuid.size(), 1u);
    EXPECT_EQ(saved.msrs.size(), 2u);
    saved.events.nmi_pending = 1;
    saved.xsave[0] = 0x7f;

    auto fresh = MUST(vm.create_vcpu(0));
    ASSERT_TRUE(fresh->restore_state(saved));
    EXPECT_EQ(MUST(fresh->save_state()), saved);
    EXPECT_EQ(MUST(fresh->registers()).rbx, 99u);
}

TEST(FakeVcpuState, XsaveAreaOfTheWrongSizeIsRefusedAndChangesNothing) {
    FakeVm vm;
    auto vcpu = MUST(vm.create_vcpu(0));
    auto const before = MUST(vcpu->save_state());
    auto state = before;
    state.registers.rip = 0x9999;
    state.xsave.resize(FakeVcpu::XSAVE_SIZE - 64);
    auto const result = vcpu->restore_state(state);
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("xsave"), std::string::npos) << result.error().message();
    EXPECT_EQ(MUST(vcpu->save_state()), before);
}

TEST(FakeVcpuState, TooManyMsrsAreRefusedNamingTheList) {
    FakeVm vm;
    auto vcpu = MUST(vm.create_vcpu(0));
    auto state = MUST(vcpu->save_state());
    state.msrs.assign(X86VcpuState::MAX_MSRS + 1, MsrEntry { 0x10, 0 });
    auto const result = vcpu->restore_state(state);
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("msrs"), std::string::npos) << result.error().message();
}

TEST(FakeVmState, NeedsTheIrqchipAndRoundTrips) {
    FakeVm vm;
    auto const refused = vm.save_state();
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("irqchip"), std::string::npos);
    EXPECT_FALSE(vm.restore_state(X86VmState {}));

    MUST(vm.create_irqchip_and_pit());
    X86VmState state;
    state.pic_master.imr = 0xfe;
    state.ioapic.redirection_table[4] = 0x24;
    state.pit.channels[0].count = 11932;
    state.clock.nanoseconds = 77;
    ASSERT_TRUE(vm.restore_state(state));
    EXPECT_EQ(MUST(vm.save_state()), state);
}

TEST(FakeVmDirtyLog, RecordsMarkedPagesOnlyWhileLoggingAndTakingStartsANewRecord) {
    FakeVm vm;
    auto memory = MUST(GuestMemory::create({ { GuestAddress(0), 100 * 4096 } }));
    EXPECT_FALSE(vm.enable_dirty_logging()) << "logging needs memory mapped";
    MUST(vm.map_memory(memory));
    EXPECT_FALSE(vm.take_dirty_log(0)) << "not enabled";
    vm.mark_page_dirty(0, 3); // before logging: lost, as on KVM
    MUST(vm.enable_dirty_logging());
    vm.mark_page_dirty(0, 5);
    vm.mark_page_dirty(0, 99);
    auto const taken = MUST(vm.take_dirty_log(0));
    ASSERT_EQ(taken.size(), 2u);
    EXPECT_EQ(taken[0], uint64_t { 1 } << 5);
    EXPECT_EQ(taken[1], uint64_t { 1 } << (99 - 64));
    EXPECT_EQ(MUST(vm.take_dirty_log(0)), std::vector<uint64_t>(2));
    EXPECT_FALSE(vm.take_dirty_log(1)) << "no such slot";
}

} // namespace
} // namespace kvmm

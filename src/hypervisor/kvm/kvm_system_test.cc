// KVM-tier tests of the KVM backend itself: a real VM running a few real-mode
// instructions. Skipped (and reported as skipped) where /dev/kvm cannot be opened.
#include "hypervisor/kvm/kvm_system.h"

#include <gtest/gtest.h>

#include <array>
#include <variant>

namespace kvmm {
namespace {

TEST(KvmSystem, MissingDeviceErrorSaysKvmIsUnavailable) {
    auto result = KvmSystem::open("/nonexistent/kvm");
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("does not exist"), std::string::npos) << result.error().message();
}

class KvmBackend : public ::testing::Test {
protected:
    void SetUp() override {
        auto system = KvmSystem::open();
        if (!system)
            GTEST_SKIP() << "KVM unavailable: " << system.error().message();
        m_system.emplace(std::move(system.value()));
    }
    std::optional<KvmSystem> m_system;
};

TEST_F(KvmBackend, RealModeGuestPortWriteAndHaltAreReported) {
    auto vm = MUST(m_system->create_vm());
    auto memory = MUST(GuestMemory::create({ { GuestAddress(0), 0x10000 } }));
    // mov dx, 0x3f8 ; mov al, 'K' ; out dx, al ; hlt
    std::array<uint8_t, 7> const program { 0xba, 0xf8, 0x03, 0xb0, 'K', 0xee, 0xf4 };
    MUST(memory.write(GuestAddress(0x1000), std::as_bytes(std::span(program))));
    MUST(vm->map_memory(memory));
    auto vcpu = MUST(vm->create_vcpu(0));
    auto special = MUST(vcpu->special_registers());
    special.cs.base = 0;
    special.cs.selector = 0;
    MUST(vcpu->set_special_registers(special));
    X86Registers registers {};
    registers.rip = 0x1000;
    registers.rflags = 0x2;
    MUST(vcpu->set_registers(registers));

    auto exit = MUST(vcpu->run());
    auto* io = std::get_if<vcpu_exit::IoOut>(&exit);
    ASSERT_NE(io, nullptr) << "exit variant " << exit.index();
    EXPECT_EQ(io->port, 0x3f8);
    ASSERT_EQ(io->data.size(), 1u);
    EXPECT_EQ(io->data[0], 'K');

    exit = MUST(vcpu->run());
    EXPECT_TRUE(std::holds_alternative<vcpu_exit::Halt>(exit)) << "exit variant " << exit.index();
}

TEST_F(KvmBackend, ImmediateExitReturnsInterrupted) {
    auto vm = MUST(m_system->create_vm());
    auto memory = MUST(GuestMemory::create({ { GuestAddress(0), 0x10000 } }));
    MUST(vm->map_memory(memory));
    auto vcpu = MUST(vm->create_vcpu(0));
    vcpu->set_immediate_exit(true);
    auto exit = MUST(vcpu->run());
    EXPECT_TRUE(std::holds_alternative<vcpu_exit::Interrupted>(exit));
}

TEST_F(KvmBackend, SupportedCpuidHasBasicLeaves) {
    auto vm = MUST(m_system->create_vm());
    auto cpuid = MUST(vm->supported_cpuid());
    bool has_leaf_one = false;
    for (auto const& entry : cpuid)
        has_leaf_one |= entry.function == 1;
    EXPECT_TRUE(has_leaf_one);
    EXPECT_GE(vm->max_vcpus(), 1u);
}

TEST_F(KvmBackend, CpuidAndMsrTablesAreAcceptedAndBadMsrIsNamed) {
    auto vm = MUST(m_system->create_vm());
    auto vcpu = MUST(vm->create_vcpu(0));
    auto cpuid = MUST(vm->supported_cpuid());
    EXPECT_TRUE(vcpu->set_cpuid(cpuid).has_value());
    MsrEntry const good[] = { { 0x174, 0 }, { 0x175, 0 } }; // IA32_SYSENTER_CS, _ESP
    EXPECT_TRUE(vcpu->set_msrs(good).has_value());
    MsrEntry const bad[] = { { 0x174, 0 }, { 0xdeadbeef, 1 } };
    auto result = vcpu->set_msrs(bad);
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("0xdeadbeef"), std::string::npos) << result.error().message();
}

TEST_F(KvmBackend, VcpuIndexBeyondMaximumIsRejected) {
    auto vm = MUST(m_system->create_vm());
    auto result = vm->create_vcpu(vm->max_vcpus());
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("maximum"), std::string::npos);
}

} // namespace
} // namespace kvmm

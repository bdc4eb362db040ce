// KVM-tier tests of the vCPU and VM saved state on a real /dev/kvm: save -> restore -> save
// gives the same state, and a running guest carries on, counter and port I/O unbroken,
// after its state is read and written back, in the same vCPU or a fresh VM. Skipped (and
// reported as skipped) where /dev/kvm cannot be opened.
//
// The guest is a real-mode loop of five instructions: this workplace's KVM emulates every
// guest instruction, so it stays tiny.
#include "hypervisor/kvm/kvm_system.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <variant>

namespace kvmm {
namespace {

constexpr uint64_t CODE_ADDRESS = 0x1000;
constexpr uint64_t COUNTER_ADDRESS = 0x2000;
constexpr uint64_t ANSWER_ADDRESS = 0x2002;
constexpr uint16_t COUNTER_PORT = 0x500;
constexpr uint64_t MEMORY_SIZE = 0x10000;
constexpr uint32_t MSR_IA32_TSC = 0x10;
constexpr uint32_t MSR_IA32_TSC_DEADLINE = 0x6e0;
constexpr uint32_t MSR_IA32_SYSENTER_CS = 0x174;
constexpr uint32_t MSR_KVM_SYSTEM_TIME_NEW = 0x4b564d01;
constexpr size_t LAPIC_SPURIOUS_VECTOR = 0xf0;
constexpr size_t LAPIC_LVT_TIMER = 0x320;

// The guest counts in a register and in memory, reports each count with an OUT, reads the
// host's answer with an IN and stores it:
//   mov dx, 0x500
//   loop: inc bx ; inc word [0x2000] ; mov ax, bx ; out dx, ax ; in ax, dx ; mov [0x2002], ax
//         jmp loop
// A port read exits to the host half done (KVM completes it on the next KVM_RUN), so the
// state saved right after an IN exit shows whether save_state() finished it.
constexpr std::array<uint8_t, 17> COUNTER_PROGRAM { 0xba, 0x00, 0x05, 0x43, 0xff, 0x06, 0x00, 0x20, 0x89,
                                                    0xd8, 0xef, 0xed, 0xa3, 0x02, 0x20, 0xeb, 0xf2 };

uint16_t answer_for(uint16_t count) { return static_cast<uint16_t>(count * 100); }

uint64_t msr_value(X86VcpuState const& state, uint32_t index) {
    for (auto const& msr : state.msrs)
        if (msr.index == index)
            return msr.value;
    ADD_FAILURE() << "MSR " << std::hex << index << " is not in the saved state";
    return 0;
}

// The TSC and the guest clock run on between two saves: they are compared within a bound
// (five seconds of a TSC of at most 10 GHz; five seconds of nanoseconds) and then masked.
// The PIT reloads its counters when restored, so their load times move too.
constexpr uint64_t MAX_TSC_ADVANCE = 50'000'000'000;
constexpr uint64_t MAX_CLOCK_ADVANCE_NS = 5'000'000'000;

void expect_same_vcpu_state(X86VcpuState const& before, X86VcpuState after) {
    uint64_t const tsc_before = msr_value(before, MSR_IA32_TSC);
    uint64_t const tsc_after = msr_value(after, MSR_IA32_TSC);
    EXPECT_GE(tsc_after, tsc_before) << "the TSC went backwards";
    EXPECT_LT(tsc_after - tsc_before, MAX_TSC_ADVANCE);
    for (auto& msr : after.msrs)
        if (msr.index == MSR_IA32_TSC)
            msr.value = tsc_before;
    EXPECT_EQ(after.mp_state, before.mp_state);
    EXPECT_EQ(after.registers, before.registers);
    EXPECT_EQ(after.special_registers, before.special_registers);
    EXPECT_EQ(after.interrupt_bitmap, before.interrupt_bitmap);
    EXPECT_EQ(after.xsave, before.xsave);
    EXPECT_EQ(after.xcrs, before.xcrs);
    EXPECT_EQ(after.debug_registers, before.debug_registers);
    EXPECT_EQ(after.lapic, before.lapic);
    EXPECT_EQ(after.cpuid, before.cpuid);
    EXPECT_EQ(after.events, before.events);
    ASSERT_EQ(after.msrs.size(), before.msrs.size());
    for (size_t i = 0; i < before.msrs.size(); ++i) {
        EXPECT_EQ(after.msrs[i].index, before.msrs[i].index);
        EXPECT_EQ(after.msrs[i].value, before.msrs[i].value) << "MSR " << std::hex << before.msrs[i].index;
    }
    EXPECT_TRUE(after == before) << "a part of the vCPU state differs";
}

void expect_same_vm_state(X86VmState const& before, X86VmState after) {
    EXPECT_GE(after.clock.nanoseconds, before.clock.nanoseconds) << "the guest clock went backwards";
    EXPECT_LT(after.clock.nanoseconds - before.clock.nanoseconds, MAX_CLOCK_ADVANCE_NS);
    after.clock = before.clock;
    for (size_t i = 0; i < after.pit.channels.size(); ++i)
        after.pit.channels[i].count_load_time = before.pit.channels[i].count_load_time;
    EXPECT_EQ(after.pic_master, before.pic_master);
    EXPECT_EQ(after.pic_slave, before.pic_slave);
    EXPECT_EQ(after.ioapic, before.ioapic);
    EXPECT_EQ(after.pit, before.pit);
}

class KvmState : public ::testing::Test {
protected:
    void SetUp() override {
        auto system = KvmSystem::open();
        if (!system)
            GTEST_SKIP() << "KVM unavailable: " << system.error().message();
        m_system.emplace(std::move(system.value()));
    }

    struct Machine {
        GuestMemory memory;
        std::unique_ptr<Vm> vm;
        std::unique_ptr<Vcpu> vcpu;
    };

    // A VM with `memory` mapped, the in-kernel irqchip and PIT, and vCPU 0, given the host's
    // CPUID or (for a restore to set) none; ready for a restore or for the counter program.
    enum class Cpuid { Host, None };
    Machine create_machine(GuestMemory memory, Cpuid cpuid = Cpuid::Host) {
        auto vm = MUST(m_system->create_vm());
        MUST(vm->set_tss_address(0xfffbd000));
        MUST(vm->create_irqchip_and_pit());
        MUST(vm->map_memory(memory));
        auto vcpu = MUST(vm->create_vcpu(0));
        if (cpuid == Cpuid::Host) {
            auto const entries = MUST(vm->supported_cpuid());
            MUST(vcpu->set_cpuid(entries));
        }
        return Machine { std::move(memory), std::move(vm), std::move(vcpu) };
    }

    Machine create_counter_machine() {
        auto memory = MUST(GuestMemory::create({ { GuestAddress(0), MEMORY_SIZE } }));
        MUST(memory.write(GuestAddress(CODE_ADDRESS), std::as_bytes(std::span(COUNTER_PROGRAM))));
        auto machine = create_machine(std::move(memory));
        auto special = MUST(machine.vcpu->special_registers());
        special.cs.base = 0;
        special.cs.selector = 0;
        special.ds.base = 0;
        special.ds.selector = 0;
        MUST(machine.vcpu->set_special_registers(special));
        X86Registers registers {};
        registers.rip = CODE_ADDRESS;
        registers.rflags = 0x2;
        MUST(machine.vcpu->set_registers(registers));
        return machine;
    }

    // Runs until the next port write and returns the 16-bit value written to the counter port,
    // then runs to the port read that follows and answers it: the vCPU stops half-way through
    // that IN, as a VMM's vCPU does while it handles an exit.
    static uint16_t next_count(Vcpu& vcpu) {
        auto exit = MUST(vcpu.run());
        auto const* out = std::get_if<vcpu_exit::IoOut>(&exit);
        if (!out) {
            ADD_FAILURE() << "exit variant " << exit.index() << " instead of a port write";
            return 0;
        }
        EXPECT_EQ(out->port, COUNTER_PORT);
        EXPECT_EQ(out->data.size(), 2u);
        auto const count = static_cast<uint16_t>(out->data[0] | (out->data[1] << 8));
        exit = MUST(vcpu.run());
        auto const* in = std::get_if<vcpu_exit::IoIn>(&exit);
        if (!in || in->data.size() != 2) {
            ADD_FAILURE() << "exit variant " << exit.index() << " instead of a 2-byte port read";
            return 0;
        }
        uint16_t const answer = answer_for(count);
        std::memcpy(in->data.data(), &answer, sizeof(answer));
        return count;
    }

    static uint16_t read_word(GuestMemory const& memory, uint64_t address) {
        return MUST(memory.read_obj<uint16_t>(GuestAddress(address)));
    }

    std::optional<KvmSystem> m_system;
};

TEST_F(KvmState, SaveRestoreSaveGivesTheSameStateInTheSameAndInAFreshVcpu) {
    auto machine = create_counter_machine();
    for (uint16_t expected = 1; expected <= 3; ++expected)
        ASSERT_EQ(next_count(*machine.vcpu), expected);
    // Give the state parts that are zero after reset a value: an MSR, and the LAPIC timer in
    // TSC-deadline mode (masked) with a deadline far ahead, which KVM keeps only when the
    // LAPIC is restored before the MSRs and the TSC before the deadline.
    auto lapic = MUST(machine.vcpu->lapic());
    lapic.registers[LAPIC_SPURIOUS_VECTOR] = 0xff;
    lapic.registers[LAPIC_SPURIOUS_VECTOR + 1] = 0x01;     // software-enabled
    uint32_t const timer = (2u << 17) | (1u << 16) | 0x40; // TSC-deadline mode, masked, vector 0x40
    std::memcpy(&lapic.registers[LAPIC_LVT_TIMER], &timer, sizeof(timer));
    MUST(machine.vcpu->set_lapic(lapic));
    auto const tsc = msr_value(MUST(machine.vcpu->save_state()), MSR_IA32_TSC);
    MsrEntry const msrs[] = { { MSR_IA32_SYSENTER_CS, 0x10 }, { MSR_IA32_TSC_DEADLINE, tsc + 1'000'000'000'000 } };
    MUST(machine.vcpu->set_msrs(msrs));

    auto const vcpu_state = MUST(machine.vcpu->save_state());
    auto const vm_state = MUST(machine.vm->save_state());
    EXPECT_EQ(vcpu_state.registers.rbx, 3u);
    EXPECT_EQ(msr_value(vcpu_state, MSR_IA32_SYSENTER_CS), 0x10u);
    EXPECT_EQ(msr_value(vcpu_state, MSR_IA32_TSC_DEADLINE), tsc + 1'000'000'000'000);
    msr_value(vcpu_state, MSR_KVM_SYSTEM_TIME_NEW); // listed as saveable, so saved
    EXPECT_GE(vcpu_state.xsave.size(), 4096u);
    EXPECT_FALSE(vcpu_state.cpuid.empty());
    EXPECT_FALSE(vcpu_state.xcrs.empty());

    // Written back into the same vCPU and VM.
    ASSERT_TRUE(machine.vm->restore_state(vm_state));
    auto const restored = machine.vcpu->restore_state(vcpu_state);
    ASSERT_TRUE(restored) << restored.error().message();
    expect_same_vcpu_state(vcpu_state, MUST(machine.vcpu->save_state()));
    expect_same_vm_state(vm_state, MUST(machine.vm->save_state()));

    // Into a fresh VM and vCPU.
    auto fresh = create_machine(MUST(GuestMemory::create({ { GuestAddress(0), MEMORY_SIZE } })));
    auto const vm_restored = fresh.vm->restore_state(vm_state);
    ASSERT_TRUE(vm_restored) << vm_restored.error().message();
    auto const fresh_restored = fresh.vcpu->restore_state(vcpu_state);
    ASSERT_TRUE(fresh_restored) << fresh_restored.error().message();
    expect_same_vcpu_state(vcpu_state, MUST(fresh.vcpu->save_state()));
    expect_same_vm_state(vm_state, MUST(fresh.vm->save_state()));
}

TEST_F(KvmState, GuestCarriesOnInTheSameVcpuAfterItsStateIsWrittenBack) {
    auto machine = create_counter_machine();
    for (uint16_t expected = 1; expected <= 4; ++expected)
        ASSERT_EQ(next_count(*machine.vcpu), expected);
    // Saved while the fourth IN is still unfinished in KVM: save_state() completes it, so the
    // guest neither repeats it nor loses the answer.
    auto const state = MUST(machine.vcpu->save_state());
    auto const vm_state = MUST(machine.vm->save_state());
    ASSERT_TRUE(machine.vm->restore_state(vm_state));
    auto const restored = machine.vcpu->restore_state(state);
    ASSERT_TRUE(restored) << restored.error().message();
    ASSERT_EQ(next_count(*machine.vcpu), 5);
    EXPECT_EQ(read_word(machine.memory, ANSWER_ADDRESS), answer_for(4)) << "the answer to the fourth IN arrived";
    for (uint16_t expected = 6; expected <= 7; ++expected)
        ASSERT_EQ(next_count(*machine.vcpu), expected);
    EXPECT_EQ(read_word(machine.memory, COUNTER_ADDRESS), 7);
}

TEST_F(KvmState, GuestCarriesOnInAFreshVmWithItsMemoryCopied) {
    auto machine = create_counter_machine();
    for (uint16_t expected = 1; expected <= 5; ++expected)
        ASSERT_EQ(next_count(*machine.vcpu), expected);
    auto const state = MUST(machine.vcpu->save_state());
    auto const vm_state = MUST(machine.vm->save_state());
    EXPECT_EQ(read_word(machine.memory, COUNTER_ADDRESS), 5);

    auto memory = MUST(GuestMemory::create({ { GuestAddress(0), MEMORY_SIZE } }));
    std::vector<std::byte> contents(MEMORY_SIZE);
    MUST(machine.memory.read(GuestAddress(0), contents));
    MUST(memory.write(GuestAddress(0), contents));
    // The first VM goes away before the second one runs: nothing of it is left to help.
    machine.vcpu.reset();
    machine.vm.reset();

    auto fresh = create_machine(std::move(memory), Cpuid::None); // the restore sets the CPUID
    auto const vm_restored = fresh.vm->restore_state(vm_state);
    ASSERT_TRUE(vm_restored) << vm_restored.error().message();
    auto const restored = fresh.vcpu->restore_state(state);
    ASSERT_TRUE(restored) << restored.error().message();
    ASSERT_EQ(next_count(*fresh.vcpu), 6);
    EXPECT_EQ(read_word(fresh.memory, ANSWER_ADDRESS), answer_for(5));
    for (uint16_t expected = 7; expected <= 9; ++expected)
        ASSERT_EQ(next_count(*fresh.vcpu), expected);
    EXPECT_EQ(read_word(fresh.memory, COUNTER_ADDRESS), 9);
    EXPECT_EQ(read_word(fresh.memory, ANSWER_ADDRESS), answer_for(8));
}

TEST_F(KvmState, BadStateIsRefusedNamingTheFieldAndChangesNothing) {
    auto machine = create_counter_machine();
    ASSERT_EQ(next_count(*machine.vcpu), 1);
    auto const before = MUST(machine.vcpu->save_state());

    auto wrong_xsave = before;
    wrong_xsave.registers.rip = 0;
    wrong_xsave.xsave.resize(before.xsave.size() + 64);
    auto result = machine.vcpu->restore_state(wrong_xsave);
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("xsave"), std::string::npos) << result.error().message();

    auto unknown_msr = before;
    unknown_msr.registers.rip = 0;
    unknown_msr.msrs.push_back(MsrEntry { 0xdeadbeef, 1 });
    result = machine.vcpu->restore_state(unknown_msr);
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("msrs[" + std::to_string(before.msrs.size()) + "]: MSR 0xdeadbeef"),
              std::string::npos)
        << result.error().message();

    auto too_many = before;
    too_many.msrs.assign(X86VcpuState::MAX_MSRS + 1, MsrEntry { MSR_IA32_TSC, 0 });
    EXPECT_FALSE(machine.vcpu->restore_state(too_many));

    auto bad_pit = MUST(machine.vm->save_state());
    bad_pit.pit.channels[1].mode = 6;
    auto const vm_result = machine.vm->restore_state(bad_pit);
    ASSERT_FALSE(vm_result);
    EXPECT_NE(vm_result.error().message().find("pit.channel1.mode"), std::string::npos) << vm_result.error().message();

    expect_same_vcpu_state(before, MUST(machine.vcpu->save_state()));
    ASSERT_EQ(next_count(*machine.vcpu), 2) << "the guest carries on as if nothing had been tried";
}

TEST_F(KvmState, ValueKvmRefusesHalfWayLeavesTheVcpuAsItWas) {
    auto machine = create_counter_machine();
    ASSERT_EQ(next_count(*machine.vcpu), 1);
    auto const before = MUST(machine.vcpu->save_state());
    // A non-canonical system-call entry point: KVM refuses it in KVM_SET_MSRS, even from the
    // host, after the registers, segments, XSAVE area and LAPIC have been written.
    constexpr uint32_t MSR_LSTAR = 0xc0000082;
    auto refused = before;
    refused.registers.rip = 0;
    refused.registers.rbx = 1000;
    bool has_lstar = false;
    for (auto& msr : refused.msrs) {
        if (msr.index == MSR_LSTAR) {
            msr.value = 0x8000000000000000;
            has_lstar = true;
        }
    }
    if (!has_lstar)
        GTEST_SKIP() << "this host's KVM does not list MSR_LSTAR as saveable";
    auto const result = machine.vcpu->restore_state(refused);
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("0xc0000082"), std::string::npos) << result.error().message();
    expect_same_vcpu_state(before, MUST(machine.vcpu->save_state()));
    ASSERT_EQ(next_count(*machine.vcpu), 2) << "the guest carries on from where it was";
}

} // namespace
} // namespace kvmm

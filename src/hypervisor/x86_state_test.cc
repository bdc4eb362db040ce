// Unit tests of the hypervisor objects' saved state (X86VcpuState, X86VmState): encoding round
// trips and the refusal of bad input, naming the field.
#include "hypervisor/x86_state.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

namespace kvmm {
namespace {

// A state with every part populated and distinct values, so a field dropped or swapped by
// the encoder or decoder changes the result.
X86VcpuState sample_vcpu_state() {
    X86VcpuState state;
    state.mp_state = X86MpState::Halted;
    state.registers = X86Registers { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0x1000, 0x202 };
    state.special_registers.cs = X86Segment { 0x10000, 0xffff, 0x1000, 11, 1, 0, 0, 1, 0, 0, 0, 0 };
    state.special_registers.tr = X86Segment { 0x5000, 0x67, 0x28, 11, 1, 0, 0, 0, 0, 0, 0, 0 };
    state.special_registers.gdt = X86DescriptorTable { 0x500, 0x27 };
    state.special_registers.cr0 = 0x80050033;
    state.special_registers.cr3 = 0x9000;
    state.special_registers.efer = 0xd01;
    state.special_registers.apic_base = 0xfee00900;
    state.interrupt_bitmap[1] = 1ull << 3;
    state.xsave.resize(4096);
    for (size_t i = 0; i < state.xsave.size(); ++i)
        state.xsave[i] = static_cast<uint8_t>(i * 7);
    state.xcrs = { XcrEntry { 0, 7 } };
    state.debug_registers = X86DebugRegisters { { 0x100, 0x200, 0x300, 0x400 }, 0xffff0ff0, 0x400 };
    state.lapic.registers[0x20] = 0x01;
    state.lapic.registers[0x3ff] = 0xaa;
    state.msrs = { MsrEntry { 0x10, 123456789 }, MsrEntry { 0x6e0, 987654321 }, MsrEntry { 0x4b564d01, 0x2001 } };
    state.cpuid = { CpuidEntry { 0, 0, 0, 0xd, 0x68747541, 0x444d4163, 0x69746e65 },
                    CpuidEntry { 7, 0, 1, 0, 0x209, 0, 0 } };
    state.events.exception_injected = 1;
    state.events.exception_vector = 14;
    state.events.exception_has_error_code = 1;
    state.events.exception_error_code = 2;
    state.events.nmi_masked = 1;
    state.events.sipi_vector = 0x9a;
    state.events.latched_init = 1;
    return state;
}

X86VmState sample_vm_state() {
    X86VmState state;
    state.pic_master = PicState { 1, 2, 0xfb, 4, 5, 0x20, 7, 0, 0, 0, 1, 0, 0, 1, 0x0c, 0xf8 };
    state.pic_slave.irq_base = 0x28;
    state.pic_slave.imr = 0xff;
    state.ioapic.base_address = 0xfec00000;
    state.ioapic.id = 3;
    state.ioapic.irr = 1u << 4;
    for (size_t pin = 0; pin < IoapicState::PINS; ++pin)
        state.ioapic.redirection_table[pin] = 0x10000 | (0x20 + pin);
    state.pit.channels[0] = PitChannelState { 65536, 0, 0, 0, 0, 3, 3, 0, 3, 2, 0, 1, 123456789012 };
    state.pit.channels[2].gate = 1;
    state.pit.speaker_data_on = true;
    state.clock.nanoseconds = 42'000'000'000;
    return state;
}

std::vector<std::byte> encode(X86VcpuState const& state) {
    StateWriter writer;
    state.encode(writer);
    return writer.payload();
}

Expected<X86VcpuState> decode_vcpu(std::span<std::byte const> payload) {
    StateReader reader(payload);
    return X86VcpuState::decode(reader);
}

testing::AssertionResult refused_naming(Expected<X86VcpuState> const& result, std::string const& field) {
    if (result)
        return testing::AssertionFailure() << "accepted";
    if (result.error().message().find(field) == std::string::npos)
        return testing::AssertionFailure() << "does not name '" << field << "': " << result.error().message();
    return testing::AssertionSuccess();
}

TEST(X86VcpuState, EncodeDecodeRoundTripsEveryPartThroughASealedBlob) {
    auto const state = sample_vcpu_state();
    auto const blob = seal_state(encode(state));
    auto const payload = MUST(open_state(blob));
    StateReader reader(payload);
    auto const decoded = X86VcpuState::decode(reader);
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_TRUE(reader.at_end());
    EXPECT_EQ(*decoded, state);
    EXPECT_EQ(encode(*decoded), encode(state));
}

TEST(X86VcpuState, EachFieldTakesPartInTheComparison) {
    auto const state = sample_vcpu_state();
    auto changed = state;
    changed.special_registers.tr.limit = 0x68;
    EXPECT_NE(changed, state);
    changed = state;
    changed.events.interrupt_shadow = 1;
    EXPECT_NE(changed, state);
    changed = state;
    changed.xsave[4000] ^= 1;
    EXPECT_NE(changed, state);
    changed = state;
    changed.msrs[1].value += 1;
    EXPECT_NE(changed, state);
}

TEST(X86VcpuState, EveryTruncationIsRefused) {
    auto const payload = encode(sample_vcpu_state());
    for (size_t length = 0; length < payload.size(); length += 1 + length / 64) {
        auto const result = decode_vcpu(std::span(payload).first(length));
        EXPECT_FALSE(result) << "accepted " << length << " of " << payload.size() << " bytes";
    }
    EXPECT_TRUE(refused_naming(decode_vcpu(std::span(payload).first(payload.size() - 1)), "vcpu"));
}

TEST(X86VcpuState, TruncatedMsrListIsRefusedNamingTheMsr) {
    auto state = sample_vcpu_state();
    state.cpuid.clear();
    // Rewrite the MSR count, the u64 just before the first entry (u32 index, u64 value), to
    // claim more entries (within the bound) than the section holds.
    auto payload = encode(state);
    std::array<std::byte, 12> first_entry {};
    std::memcpy(first_entry.data(), &state.msrs[0].index, 4);
    std::memcpy(first_entry.data() + 4, &state.msrs[0].value, 8);
    auto const found = std::search(payload.begin(), payload.end(), first_entry.begin(), first_entry.end());
    ASSERT_NE(found, payload.end());
    uint64_t const claimed = 1000;
    std::memcpy(&*(found - 8), &claimed, sizeof(claimed));
    EXPECT_TRUE(refused_naming(decode_vcpu(payload), "vcpu/msr.index: truncated"));
}

TEST(X86VcpuState, WrongVersionIsRefusedNamingTheSection) {
    auto payload = encode(sample_vcpu_state());
    // Section header: u16 name length, the name, then the u32 version.
    size_t const version_at = 2 + X86VcpuState::SECTION.size();
    uint32_t const version = X86VcpuState::VERSION + 1;
    std::memcpy(payload.data() + version_at, &version, sizeof(version));
    auto const result = decode_vcpu(payload);
    EXPECT_TRUE(refused_naming(result, "vcpu"));
    EXPECT_TRUE(refused_naming(result, "version 2"));
}

TEST(X86VcpuState, TooManyMsrsAreRefusedNamingTheList) {
    auto state = sample_vcpu_state();
    state.msrs.assign(X86VcpuState::MAX_MSRS + 1, MsrEntry { 0x10, 0 });
    auto const checked = state.check();
    ASSERT_FALSE(checked);
    EXPECT_NE(checked.error().message().find("msrs"), std::string::npos) << checked.error().message();
    EXPECT_TRUE(refused_naming(decode_vcpu(encode(state)), "vcpu/msrs: 1025 is outside [0, 1024]"));
}

TEST(X86VcpuState, TooManyCpuidEntriesAndXcrsAreRefused) {
    auto state = sample_vcpu_state();
    state.cpuid.assign(X86VcpuState::MAX_CPUID_ENTRIES + 1, CpuidEntry {});
    EXPECT_TRUE(refused_naming(decode_vcpu(encode(state)), "vcpu/cpuid: 257"));
    state = sample_vcpu_state();
    state.xcrs.assign(X86VcpuState::MAX_XCRS + 1, XcrEntry {});
    EXPECT_TRUE(refused_naming(decode_vcpu(encode(state)), "vcpu/xcrs: 17"));
}

TEST(X86VcpuState, OversizedXsaveAreaIsRefusedBeforeItIsRead) {
    auto state = sample_vcpu_state();
    state.xsave.resize(X86VcpuState::MAX_XSAVE_SIZE + 1);
    EXPECT_TRUE(refused_naming(decode_vcpu(encode(state)), "vcpu/xsave: length 65537"));
}

TEST(X86VcpuState, UnknownMpStateAndBadVectorsAreRefused) {
    auto state = sample_vcpu_state();
    state.mp_state = static_cast<X86MpState>(7);
    EXPECT_TRUE(refused_naming(decode_vcpu(encode(state)), "mp_state"));
    state = sample_vcpu_state();
    state.events.exception_vector = 32;
    EXPECT_TRUE(refused_naming(decode_vcpu(encode(state)), "events.exception_vector"));
    state = sample_vcpu_state();
    state.interrupt_bitmap[2] = 3;
    EXPECT_TRUE(refused_naming(decode_vcpu(encode(state)), "interrupt_bitmap"));
}

TEST(X86VmState, NonBooleanIsRefusedNamingTheField) {
    X86VmState state = sample_vm_state();
    StateWriter writer;
    state.encode(writer);
    auto payload = writer.payload();
    // speaker_data_on is the last byte of the pit section, just before the 8-byte clock.
    payload[payload.size() - 9] = std::byte { 2 };
    StateReader reader(payload);
    auto const result = X86VmState::decode(reader);
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("vm/pit/speaker_data_on"), std::string::npos) << result.error().message();
}

TEST(X86VmState, EncodeDecodeRoundTrips) {
    auto const state = sample_vm_state();
    StateWriter writer;
    state.encode(writer);
    StateReader reader(writer.payload());
    auto const decoded = X86VmState::decode(reader);
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_TRUE(reader.at_end());
    EXPECT_EQ(*decoded, state);
}

TEST(X86VmState, TruncationIsRefusedNamingThePart) {
    StateWriter writer;
    sample_vm_state().encode(writer);
    auto const& payload = writer.payload();
    for (size_t length = 0; length < payload.size(); ++length) {
        StateReader reader { std::span(payload).first(length) };
        EXPECT_FALSE(X86VmState::decode(reader)) << "accepted " << length << " bytes";
    }
    // Cut inside the IOAPIC's redirection table, then repair the outer length so that the
    // error comes from the IOAPIC section itself.
    StateWriter partial;
    partial.begin_section(X86VmState::SECTION, X86VmState::VERSION);
    partial.begin_section("pic_master", 1);
    for (int i = 0; i < 16; ++i)
        partial.u8(0);
    partial.end_section();
    partial.begin_section("pic_slave", 1);
    for (int i = 0; i < 16; ++i)
        partial.u8(0);
    partial.end_section();
    partial.begin_section("ioapic", 1);
    partial.u64(0xfec00000);
    partial.u32(0);
    partial.end_section();
    partial.end_section();
    StateReader reader(partial.payload());
    auto const result = X86VmState::decode(reader);
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("vm/ioapic/id"), std::string::npos) << result.error().message();
}

} // namespace
} // namespace kvmm

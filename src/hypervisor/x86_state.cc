#include "hypervisor/x86_state.h"

#include <fmt/format.h>

#include <cstring>
#include <optional>
#include <string>
#include <type_traits>

namespace kvmm {

namespace {

// Each fixed-size struct lists its fields once, in a visit() function that both the encoder
// and the decoder walk, so the two cannot disagree on order or width.

// Writes every visited field at its width.
struct FieldWriter {
    StateWriter& writer;

    template <typename T>
    void operator()(std::string_view, T const& value) {
        if constexpr (std::is_same_v<T, bool>)
            writer.boolean(value);
        else if constexpr (sizeof(T) == 1)
            writer.u8(static_cast<uint8_t>(value));
        else if constexpr (sizeof(T) == 2)
            writer.u16(static_cast<uint16_t>(value));
        else if constexpr (sizeof(T) == 4)
            writer.u32(static_cast<uint32_t>(value));
        else
            writer.u64(static_cast<uint64_t>(value));
    }
};

// Reads every visited field at its width; after the first error it reads nothing more and
// keeps that error (which names the field) for the caller.
struct FieldReader {
    StateReader& reader;
    std::optional<Error> error {};

    template <typename T>
    void operator()(std::string_view field, T& value) {
        if (error)
            return;
        auto keep = [&](auto read) {
            if (!read)
                error = read.error();
            else
                value = static_cast<T>(*read);
        };
        if constexpr (std::is_same_v<T, bool>)
            keep(reader.boolean(field));
        else if constexpr (sizeof(T) == 1)
            keep(reader.u8(field));
        else if constexpr (sizeof(T) == 2)
            keep(reader.u16(field));
        else if constexpr (sizeof(T) == 4)
            keep(reader.u32(field));
        else
            keep(reader.u64(field));
    }

    Expected<void> result() const {
        if (error)
            return *error;
        return {};
    }
};

template <typename Visitor>
void visit(X86Registers& r, Visitor& v) {
    v("rax", r.rax), v("rbx", r.rbx), v("rcx", r.rcx), v("rdx", r.rdx), v("rsi", r.rsi), v("rdi", r.rdi);
    v("rsp", r.rsp), v("rbp", r.rbp), v("r8", r.r8), v("r9", r.r9), v("r10", r.r10), v("r11", r.r11);
    v("r12", r.r12), v("r13", r.r13), v("r14", r.r14), v("r15", r.r15), v("rip", r.rip), v("rflags", r.rflags);
}

// `name.field`, for the fields of repeated parts (segments, table entries, PIT channels).
std::string member(std::string_view name, std::string_view field) { return fmt::format("{}.{}", name, field); }

template <typename Visitor>
void visit_segment(std::string_view n, X86Segment& s, Visitor& v) {
    v(member(n, "base"), s.base), v(member(n, "limit"), s.limit), v(member(n, "selector"), s.selector);
    v(member(n, "type"), s.type), v(member(n, "present"), s.present), v(member(n, "dpl"), s.dpl);
    v(member(n, "db"), s.db), v(member(n, "s"), s.s), v(member(n, "l"), s.l), v(member(n, "g"), s.g);
    v(member(n, "avl"), s.avl), v(member(n, "unusable"), s.unusable);
}

template <typename Visitor>
void visit(X86SpecialRegisters& s, Visitor& v) {
    visit_segment("cs", s.cs, v), visit_segment("ds", s.ds, v), visit_segment("es", s.es, v);
    visit_segment("fs", s.fs, v), visit_segment("gs", s.gs, v), visit_segment("ss", s.ss, v);
    visit_segment("tr", s.tr, v), visit_segment("ldt", s.ldt, v);
    v("gdt.base", s.gdt.base), v("gdt.limit", s.gdt.limit), v("idt.base", s.idt.base), v("idt.limit", s.idt.limit);
    v("cr0", s.cr0), v("cr2", s.cr2), v("cr3", s.cr3), v("cr4", s.cr4), v("cr8", s.cr8), v("efer", s.efer);
    v("apic_base", s.apic_base);
}

template <typename Visitor>
void visit(X86DebugRegisters& d, Visitor& v) {
    v("dr0", d.address[0]), v("dr1", d.address[1]), v("dr2", d.address[2]), v("dr3", d.address[3]);
    v("dr6", d.dr6), v("dr7", d.dr7);
}

template <typename Visitor>
void visit(X86VcpuEvents& e, Visitor& v) {
    v("exception_injected", e.exception_injected), v("exception_vector", e.exception_vector);
    v("exception_has_error_code", e.exception_has_error_code), v("exception_pending", e.exception_pending);
    v("exception_error_code", e.exception_error_code), v("exception_has_payload", e.exception_has_payload);
    v("exception_payload", e.exception_payload), v("interrupt_injected", e.interrupt_injected);
    v("interrupt_vector", e.interrupt_vector), v("interrupt_soft", e.interrupt_soft);
    v("interrupt_shadow", e.interrupt_shadow), v("nmi_injected", e.nmi_injected), v("nmi_pending", e.nmi_pending);
    v("nmi_masked", e.nmi_masked), v("sipi_vector", e.sipi_vector), v("smm", e.smm), v("smi_pending", e.smi_pending);
    v("smm_inside_nmi", e.smm_inside_nmi), v("latched_init", e.latched_init);
    v("triple_fault_pending", e.triple_fault_pending);
}

template <typename Visitor>
void visit(PicState& p, Visitor& v) {
    v("last_irr", p.last_irr), v("irr", p.irr), v("imr", p.imr), v("isr", p.isr), v("priority_add", p.priority_add);
    v("irq_base", p.irq_base), v("read_reg_select", p.read_reg_select), v("poll", p.poll);
    v("special_mask", p.special_mask), v("init_state", p.init_state), v("auto_eoi", p.auto_eoi);
    v("rotate_on_auto_eoi", p.rotate_on_auto_eoi), v("special_fully_nested_mode", p.special_fully_nested_mode);
    v("init4", p.init4), v("elcr", p.elcr), v("elcr_mask", p.elcr_mask);
}

template <typename Visitor>
void visit(IoapicState& i, Visitor& v) {
    v("base_address", i.base_address), v("register_select", i.register_select), v("id", i.id), v("irr", i.irr);
    for (size_t pin = 0; pin < i.redirection_table.size(); ++pin)
        v(fmt::format("redirection_table[{}]", pin), i.redirection_table[pin]);
}

template <typename Visitor>
void visit(PitState& p, Visitor& v) {
    for (size_t index = 0; index < p.channels.size(); ++index) {
        auto& c = p.channels[index];
        auto const n = fmt::format("channel{}", index);
        v(member(n, "count"), c.count), v(member(n, "latched_count"), c.latched_count);
        v(member(n, "count_latched"), c.count_latched), v(member(n, "status_latched"), c.status_latched);
        v(member(n, "status"), c.status), v(member(n, "read_state"), c.read_state);
        v(member(n, "write_state"), c.write_state), v(member(n, "write_latch"), c.write_latch);
        v(member(n, "rw_mode"), c.rw_mode), v(member(n, "mode"), c.mode), v(member(n, "bcd"), c.bcd);
        v(member(n, "gate"), c.gate), v(member(n, "count_load_time"), c.count_load_time);
    }
    v("hpet_legacy", p.hpet_legacy), v("speaker_data_on", p.speaker_data_on);
}

template <typename T>
void write_fields(StateWriter& writer, T const& value) {
    FieldWriter visitor { writer };
    visit(const_cast<T&>(value), visitor); // the writer only reads the fields
}

template <typename T>
Expected<void> read_fields(StateReader& reader, T& value) {
    FieldReader visitor { reader };
    visit(value, visitor);
    return visitor.result();
}

// A named sub-section around one fixed-size struct, so an error says which one it was in.
template <typename T>
void write_part(StateWriter& writer, std::string_view name, T const& value) {
    writer.begin_section(name, 1);
    write_fields(writer, value);
    writer.end_section();
}

template <typename T>
Expected<void> read_part(StateReader& reader, std::string_view name, T& value) {
    TRY(reader.begin_section(name, 1));
    TRY(read_fields(reader, value));
    TRY(reader.end_section());
    return {};
}

bool known_mp_state(uint32_t value) {
    switch (static_cast<X86MpState>(value)) {
    case X86MpState::Runnable:
    case X86MpState::Uninitialized:
    case X86MpState::InitReceived:
    case X86MpState::Halted:
    case X86MpState::SipiReceived:
    case X86MpState::ApResetHold:
    case X86MpState::Suspended:
        return true;
    }
    return false;
}

} // namespace

void X86VcpuState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u32(static_cast<uint32_t>(mp_state));
    write_part(writer, "registers", registers);
    write_part(writer, "special_registers", special_registers);
    for (uint64_t word : interrupt_bitmap)
        writer.u64(word);
    writer.bytes(std::span<uint8_t const>(xsave));
    writer.u64(xcrs.size());
    for (auto const& xcr : xcrs) {
        writer.u32(xcr.index);
        writer.u64(xcr.value);
    }
    write_part(writer, "debug_registers", debug_registers);
    writer.bytes(std::span<uint8_t const>(lapic.registers));
    writer.u64(msrs.size());
    for (auto const& msr : msrs) {
        writer.u32(msr.index);
        writer.u64(msr.value);
    }
    writer.u64(cpuid.size());
    for (auto const& entry : cpuid) {
        for (uint32_t word : { entry.function, entry.index, entry.flags, entry.eax, entry.ebx, entry.ecx, entry.edx })
            writer.u32(word);
    }
    write_part(writer, "events", events);
    writer.end_section();
}

Expected<X86VcpuState> X86VcpuState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    X86VcpuState state;
    uint32_t const mp_state_value = TRY(reader.u32("mp_state"));
    if (!known_mp_state(mp_state_value))
        return Error::format("saved state vcpu/mp_state: {} is not a known multiprocessor state", mp_state_value);
    state.mp_state = static_cast<X86MpState>(mp_state_value);
    TRY(read_part(reader, "registers", state.registers));
    TRY(read_part(reader, "special_registers", state.special_registers));
    for (auto& word : state.interrupt_bitmap)
        word = TRY(reader.u64("interrupt_bitmap"));
    auto const xsave = TRY(reader.bytes("xsave", MAX_XSAVE_SIZE));
    state.xsave.resize(xsave.size());
    std::memcpy(state.xsave.data(), xsave.data(), xsave.size());
    auto const xcr_count = TRY(reader.u64_in_range("xcrs", 0, MAX_XCRS));
    for (uint64_t i = 0; i < xcr_count; ++i) {
        XcrEntry xcr {};
        xcr.index = TRY(reader.u32("xcr.index"));
        xcr.value = TRY(reader.u64("xcr.value"));
        state.xcrs.push_back(xcr);
    }
    TRY(read_part(reader, "debug_registers", state.debug_registers));
    auto const lapic = TRY(reader.bytes("lapic", state.lapic.registers.size()));
    if (lapic.size() != state.lapic.registers.size())
        return Error::format("saved state vcpu/lapic: {} bytes, the register page has {}", lapic.size(),
                             state.lapic.registers.size());
    std::memcpy(state.lapic.registers.data(), lapic.data(), lapic.size());
    auto const msr_count = TRY(reader.u64_in_range("msrs", 0, MAX_MSRS));
    state.msrs.reserve(static_cast<size_t>(msr_count));
    for (uint64_t i = 0; i < msr_count; ++i) {
        MsrEntry msr {};
        msr.index = TRY(reader.u32("msr.index"));
        msr.value = TRY(reader.u64("msr.value"));
        state.msrs.push_back(msr);
    }
    auto const cpuid_count = TRY(reader.u64_in_range("cpuid", 0, MAX_CPUID_ENTRIES));
    state.cpuid.reserve(static_cast<size_t>(cpuid_count));
    for (uint64_t i = 0; i < cpuid_count; ++i) {
        CpuidEntry entry {};
        for (uint32_t* word :
             { &entry.function, &entry.index, &entry.flags, &entry.eax, &entry.ebx, &entry.ecx, &entry.edx })
            *word = TRY(reader.u32("cpuid.entry"));
        state.cpuid.push_back(entry);
    }
    TRY(read_part(reader, "events", state.events));
    TRY(reader.end_section());
    TRY(state.check());
    return state;
}

Expected<void> X86VcpuState::check() const {
    if (!known_mp_state(static_cast<uint32_t>(mp_state)))
        return Error::format("vcpu state mp_state: {} is not a known multiprocessor state",
                             static_cast<uint32_t>(mp_state));
    if (xsave.size() > MAX_XSAVE_SIZE)
        return Error::format("vcpu state xsave: {} bytes, at most {}", xsave.size(), MAX_XSAVE_SIZE);
    if (xcrs.size() > MAX_XCRS)
        return Error::format("vcpu state xcrs: {} entries, at most {}", xcrs.size(), MAX_XCRS);
    if (msrs.size() > MAX_MSRS)
        return Error::format("vcpu state msrs: {} entries, at most {}", msrs.size(), MAX_MSRS);
    if (cpuid.size() > MAX_CPUID_ENTRIES)
        return Error::format("vcpu state cpuid: {} entries, at most {}", cpuid.size(), MAX_CPUID_ENTRIES);
    // Vectors 0-31 are the exceptions; 2 is the NMI, which has its own fields.
    if ((events.exception_injected || events.exception_pending) &&
        (events.exception_vector > 31 || events.exception_vector == 2))
        return Error::format("vcpu state events.exception_vector: {} is not an exception vector",
                             events.exception_vector);
    int set_bits = 0;
    for (uint64_t word : interrupt_bitmap)
        set_bits += __builtin_popcountll(word);
    if (set_bits > 1)
        return Error::format("vcpu state interrupt_bitmap: {} interrupts injected at once, at most 1", set_bits);
    return {};
}

void X86VmState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    write_part(writer, "pic_master", pic_master);
    write_part(writer, "pic_slave", pic_slave);
    write_part(writer, "ioapic", ioapic);
    write_part(writer, "pit", pit);
    writer.u64(clock.nanoseconds);
    writer.end_section();
}

Expected<X86VmState> X86VmState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    X86VmState state;
    TRY(read_part(reader, "pic_master", state.pic_master));
    TRY(read_part(reader, "pic_slave", state.pic_slave));
    TRY(read_part(reader, "ioapic", state.ioapic));
    TRY(read_part(reader, "pit", state.pit));
    state.clock.nanoseconds = TRY(reader.u64("clock"));
    TRY(reader.end_section());
    return state;
}

} // namespace kvmm

#include "hypervisor/kvm/kvm_vcpu.h"

#include "hypervisor/kvm/kvm_abi.h"

#include <cerrno>
#include <cstring>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

namespace kvmm {

namespace {

X86Segment from_kvm(kvm_segment const& segment) {
    return X86Segment {
        segment.base, segment.limit, segment.selector, segment.type, segment.present, segment.dpl,
        segment.db,   segment.s,     segment.l,        segment.g,    segment.avl,     segment.unusable
    };
}

kvm_segment to_kvm(X86Segment const& segment) {
    kvm_segment result {};
    result.base = segment.base;
    result.limit = segment.limit;
    result.selector = segment.selector;
    result.type = segment.type;
    result.present = segment.present;
    result.dpl = segment.dpl;
    result.db = segment.db;
    result.s = segment.s;
    result.l = segment.l;
    result.g = segment.g;
    result.avl = segment.avl;
    result.unusable = segment.unusable;
    return result;
}

std::string internal_error_reason(kvm_run const& run) {
    auto const& internal = run.internal;
    char const* kind = "unknown suberror";
    switch (internal.suberror) {
    case KVM_INTERNAL_ERROR_EMULATION:
        kind = "instruction emulation failed";
        break;
    case KVM_INTERNAL_ERROR_SIMUL_EX:
        kind = "exception raised while delivering another";
        break;
    case KVM_INTERNAL_ERROR_DELIVERY_EV:
        kind = "event delivery failed";
        break;
    default:
        break;
    }
    std::string reason = fmt::format("KVM internal error: {} (suberror {})", kind, internal.suberror);
    for (uint32_t i = 0; i < internal.ndata && i < 16; ++i)
        reason += fmt::format(" data[{}]={:#x}", i, internal.data[i]);
    return reason;
}

} // namespace

Expected<std::unique_ptr<Vcpu>> KvmVcpu::create(UniqueFd fd, uint32_t index, int mmap_size,
                                                std::shared_ptr<KvmStateSupport const> support) {
    void* run = ::mmap(nullptr, static_cast<size_t>(mmap_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (run == MAP_FAILED)
        return Error::from_errno(fmt::format("mmap of the kvm_run area of vCPU {}", index));
    return std::unique_ptr<Vcpu>(
        new KvmVcpu(std::move(fd), index, static_cast<kvm_run*>(run), mmap_size, std::move(support)));
}

KvmVcpu::~KvmVcpu() { ::munmap(m_run, static_cast<size_t>(m_mmap_size)); }

void KvmVcpu::set_immediate_exit(bool enabled) {
    // Written from another thread while this vCPU may be in KVM_RUN: the kernel reads it on entry.
    __atomic_store_n(&m_run->immediate_exit, enabled ? 1 : 0, __ATOMIC_SEQ_CST);
}

Expected<VcpuExit> KvmVcpu::run() {
    if (::ioctl(m_fd.get(), KVM_RUN, 0) != 0) {
        if (errno == EINTR || errno == EAGAIN)
            return VcpuExit { vcpu_exit::Interrupted {} };
        return Error::from_errno(fmt::format("KVM_RUN on vCPU {}", m_index));
    }
    return decode_exit();
}

VcpuExit KvmVcpu::decode_exit() {
    auto* const base = reinterpret_cast<uint8_t*>(m_run);
    switch (m_run->exit_reason) {
    case KVM_EXIT_IO: {
        auto const& io = m_run->io;
        auto const length = static_cast<size_t>(io.size) * io.count;
        // The data area lies inside the mmap()ed vCPU page; refuse an offset the kernel should never give.
        if (io.data_offset + length > static_cast<uint64_t>(m_mmap_size))
            return vcpu_exit::InternalError { fmt::format("KVM_EXIT_IO data offset {:#x} length {} outside kvm_run",
                                                          io.data_offset, length) };
        auto* data = base + io.data_offset;
        if (io.direction == KVM_EXIT_IO_OUT)
            return vcpu_exit::IoOut { io.port, io.size, io.count, std::span<uint8_t const>(data, length) };
        return vcpu_exit::IoIn { io.port, io.size, io.count, std::span<uint8_t>(data, length) };
    }
    case KVM_EXIT_MMIO: {
        auto& mmio = m_run->mmio;
        auto const length = std::min<size_t>(mmio.len, sizeof(mmio.data));
        if (mmio.is_write)
            return vcpu_exit::MmioWrite { mmio.phys_addr, std::span<uint8_t const>(mmio.data, length) };
        return vcpu_exit::MmioRead { mmio.phys_addr, std::span<uint8_t>(mmio.data, length) };
    }
    case KVM_EXIT_HLT:
        return vcpu_exit::Halt {};
    case KVM_EXIT_SHUTDOWN:
        return vcpu_exit::Shutdown {};
    case KVM_EXIT_SYSTEM_EVENT: {
        auto const type = m_run->system_event.type;
        auto kind = vcpu_exit::SystemEvent::Kind::Other;
        if (type == KVM_SYSTEM_EVENT_SHUTDOWN)
            kind = vcpu_exit::SystemEvent::Kind::PowerOff;
        else if (type == KVM_SYSTEM_EVENT_RESET)
            kind = vcpu_exit::SystemEvent::Kind::Reset;
        else if (type == KVM_SYSTEM_EVENT_CRASH)
            kind = vcpu_exit::SystemEvent::Kind::Crash;
        return vcpu_exit::SystemEvent { kind, type };
    }
    case KVM_EXIT_INTR:
        return vcpu_exit::Interrupted {};
    case KVM_EXIT_INTERNAL_ERROR:
        return vcpu_exit::InternalError { internal_error_reason(*m_run) };
    case KVM_EXIT_FAIL_ENTRY:
        return vcpu_exit::FailEntry { m_run->fail_entry.hardware_entry_failure_reason };
    default:
        return vcpu_exit::Unknown { m_run->exit_reason };
    }
}

Expected<X86Registers> KvmVcpu::registers() const {
    kvm_regs regs {};
    if (::ioctl(m_fd.get(), KVM_GET_REGS, &regs) != 0)
        return Error::from_errno("KVM_GET_REGS");
    return X86Registers { regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rsp, regs.rbp, regs.r8,
                          regs.r9,  regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15, regs.rip, regs.rflags };
}

Expected<void> KvmVcpu::set_registers(X86Registers const& registers) {
    kvm_regs regs {};
    regs.rax = registers.rax;
    regs.rbx = registers.rbx;
    regs.rcx = registers.rcx;
    regs.rdx = registers.rdx;
    regs.rsi = registers.rsi;
    regs.rdi = registers.rdi;
    regs.rsp = registers.rsp;
    regs.rbp = registers.rbp;
    regs.r8 = registers.r8;
    regs.r9 = registers.r9;
    regs.r10 = registers.r10;
    regs.r11 = registers.r11;
    regs.r12 = registers.r12;
    regs.r13 = registers.r13;
    regs.r14 = registers.r14;
    regs.r15 = registers.r15;
    regs.rip = registers.rip;
    regs.rflags = registers.rflags;
    if (::ioctl(m_fd.get(), KVM_SET_REGS, &regs) != 0)
        return Error::from_errno("KVM_SET_REGS");
    return {};
}

Expected<X86SpecialRegisters> KvmVcpu::special_registers() const { return read_special_registers(nullptr); }

Expected<X86SpecialRegisters> KvmVcpu::read_special_registers(std::array<uint64_t, 4>* interrupt_bitmap) const {
    kvm_sregs sregs {};
    if (::ioctl(m_fd.get(), KVM_GET_SREGS, &sregs) != 0)
        return Error::from_errno("KVM_GET_SREGS");
    if (interrupt_bitmap) {
        static_assert(sizeof(sregs.interrupt_bitmap) == sizeof(*interrupt_bitmap));
        std::memcpy(interrupt_bitmap->data(), sregs.interrupt_bitmap, sizeof(sregs.interrupt_bitmap));
    }
    return X86SpecialRegisters {
        from_kvm(sregs.cs),
        from_kvm(sregs.ds),
        from_kvm(sregs.es),
        from_kvm(sregs.fs),
        from_kvm(sregs.gs),
        from_kvm(sregs.ss),
        from_kvm(sregs.tr),
        from_kvm(sregs.ldt),
        X86DescriptorTable { sregs.gdt.base, sregs.gdt.limit },
        X86DescriptorTable { sregs.idt.base, sregs.idt.limit },
        sregs.cr0,
        sregs.cr2,
        sregs.cr3,
        sregs.cr4,
        sregs.cr8,
        sregs.efer,
        sregs.apic_base,
    };
}

Expected<void> KvmVcpu::set_special_registers(X86SpecialRegisters const& special) {
    return write_special_registers(special, nullptr);
}

Expected<void> KvmVcpu::write_special_registers(X86SpecialRegisters const& special,
                                                std::array<uint64_t, 4> const* interrupt_bitmap) {
    // Read first so that the injected-interrupt bitmap keeps its value unless one is given.
    kvm_sregs sregs {};
    if (::ioctl(m_fd.get(), KVM_GET_SREGS, &sregs) != 0)
        return Error::from_errno("KVM_GET_SREGS");
    if (interrupt_bitmap)
        std::memcpy(sregs.interrupt_bitmap, interrupt_bitmap->data(), sizeof(sregs.interrupt_bitmap));
    sregs.cs = to_kvm(special.cs);
    sregs.ds = to_kvm(special.ds);
    sregs.es = to_kvm(special.es);
    sregs.fs = to_kvm(special.fs);
    sregs.gs = to_kvm(special.gs);
    sregs.ss = to_kvm(special.ss);
    sregs.tr = to_kvm(special.tr);
    sregs.ldt = to_kvm(special.ldt);
    sregs.gdt.base = special.gdt.base;
    sregs.gdt.limit = special.gdt.limit;
    sregs.idt.base = special.idt.base;
    sregs.idt.limit = special.idt.limit;
    sregs.cr0 = special.cr0;
    sregs.cr2 = special.cr2;
    sregs.cr3 = special.cr3;
    sregs.cr4 = special.cr4;
    sregs.cr8 = special.cr8;
    sregs.efer = special.efer;
    sregs.apic_base = special.apic_base;
    if (::ioctl(m_fd.get(), KVM_SET_SREGS, &sregs) != 0)
        return Error::from_errno("KVM_SET_SREGS");
    return {};
}

Expected<void> KvmVcpu::set_cpuid(std::span<CpuidEntry const> entries) {
    kvm_abi::CpuidTable table(entries.size());
    table.header()->nent = static_cast<uint32_t>(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
        auto& entry = table.entries()[i];
        entry.function = entries[i].function;
        entry.index = entries[i].index;
        entry.flags = entries[i].flags;
        entry.eax = entries[i].eax;
        entry.ebx = entries[i].ebx;
        entry.ecx = entries[i].ecx;
        entry.edx = entries[i].edx;
    }
    if (::ioctl(m_fd.get(), kvm_abi::SET_CPUID2, table.data()) != 0)
        return Error::from_errno(fmt::format("KVM_SET_CPUID2 on vCPU {}", m_index));
    return {};
}

Expected<void> KvmVcpu::set_msrs(std::span<MsrEntry const> entries) {
    kvm_abi::MsrTable table(entries.size());
    table.header()->nmsrs = static_cast<uint32_t>(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
        table.entries()[i].index = entries[i].index;
        table.entries()[i].data = entries[i].value;
    }
    int const written = ::ioctl(m_fd.get(), kvm_abi::SET_MSRS, table.data());
    if (written < 0)
        return Error::from_errno("KVM_SET_MSRS");
    // KVM stops at the first MSR it rejects and returns how many it set.
    if (static_cast<size_t>(written) < entries.size())
        return Error::format("KVM_SET_MSRS on vCPU {}: MSR {:#x} was rejected", m_index,
                             entries[static_cast<size_t>(written)].index);
    return {};
}

Expected<void> KvmVcpu::reset_fpu() {
    kvm_fpu fpu {};
    fpu.fcw = 0x37f;    // x87 power-on control word (Intel SDM vol. 1, 8.1.5)
    fpu.mxcsr = 0x1f80; // all SSE exceptions masked (Intel SDM vol. 1, 10.2.3)
    if (::ioctl(m_fd.get(), KVM_SET_FPU, &fpu) != 0)
        return Error::from_errno("KVM_SET_FPU");
    return {};
}

Expected<LapicState> KvmVcpu::lapic() const {
    kvm_lapic_state state {};
    if (::ioctl(m_fd.get(), KVM_GET_LAPIC, &state) != 0)
        return Error::from_errno("KVM_GET_LAPIC");
    LapicState result;
    static_assert(sizeof(state.regs) == sizeof(result.registers));
    std::memcpy(result.registers.data(), state.regs, sizeof(state.regs));
    return result;
}

Expected<void> KvmVcpu::set_lapic(LapicState const& lapic_state) {
    kvm_lapic_state state {};
    std::memcpy(state.regs, lapic_state.registers.data(), sizeof(state.regs));
    if (::ioctl(m_fd.get(), KVM_SET_LAPIC, &state) != 0)
        return Error::from_errno("KVM_SET_LAPIC");
    return {};
}

} // namespace kvmm

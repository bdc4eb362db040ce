// FakeVm / FakeVcpu: a scripted hypervisor for unit tests of the VMM layer,
// which then run without /dev/kvm. A FakeVcpu replays a list of exits; port
// and MMIO data live in buffers the script owns. Interrupt lines and register
// writes are recorded for assertions.
//
// Threading: FakeVm::set_irq_line and FakeVcpu::set_immediate_exit may be called from any
// thread (locked); everything else from one thread.
#pragma once

#include "base/thread_annotations.h"
#include "hypervisor/vm.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

namespace kvmm {

struct ScriptedExit {
    // WaitForKick: run() blocks until set_immediate_exit(true) (a VcpuThread kick: pause or
    // stop), then reports an interrupted entry; a guest that idles until the VMM acts. A kick
    // that comes before the vCPU reaches it ends the wait just as well.
    enum class Kind { IoIn, IoOut, MmioRead, MmioWrite, Halt, Shutdown, PowerOff, InternalError, WaitForKick } kind;
    uint64_t address { 0 };       // port or guest-physical address
    std::vector<uint8_t> data {}; // bytes written by the guest, or a buffer of the read width
};

class FakeVcpu final : public Vcpu {
public:
    FakeVcpu(uint32_t index, std::deque<ScriptedExit> script) : m_index(index), m_script(std::move(script)) {}

    uint32_t index() const override { return m_index; }
    // Replays the next scripted exit; when the script is exhausted, reports Shutdown.
    Expected<VcpuExit> run() override;
    // Any thread (VcpuThread::kick).
    void set_immediate_exit(bool enabled) override;

    Expected<X86Registers> registers() const override { return m_state.registers; }
    Expected<void> set_registers(X86Registers const& registers) override;
    Expected<X86SpecialRegisters> special_registers() const override { return m_state.special_registers; }
    Expected<void> set_special_registers(X86SpecialRegisters const& special) override;
    Expected<void> set_cpuid(std::span<CpuidEntry const> entries) override;
    Expected<void> set_msrs(std::span<MsrEntry const> entries) override;
    Expected<void> reset_fpu() override { return {}; }
    Expected<LapicState> lapic() const override { return m_state.lapic; }
    Expected<void> set_lapic(LapicState const& lapic) override;

    // The fake keeps the state it was given (and what the setters above changed), so the
    // layers above can round-trip it; restore_state() makes the same checks as a real
    // hypervisor's: the bounds of X86VcpuState::check() and an XSAVE area of this vCPU's size.
    Expected<X86VcpuState> save_state() override { return m_state; }
    Expected<void> restore_state(X86VcpuState const& state) override;

    // The data of the last IoIn/MmioRead exit after the VMM filled it.
    std::vector<uint8_t> const& last_read_data() const { return m_current.data; }
    std::vector<CpuidEntry> const& cpuid() const { return m_state.cpuid; }
    std::vector<MsrEntry> const& msrs() const { return m_state.msrs; }
    // The size of the XSAVE area this fake vCPU saves and accepts (a real host's is fixed).
    static constexpr size_t XSAVE_SIZE = 4096;

private:
    uint32_t m_index;
    std::deque<ScriptedExit> m_script;
    ScriptedExit m_current { ScriptedExit::Kind::Halt };
    std::mutex m_kick_lock; // guards m_immediate_exit, which a kick sets from another thread
    std::condition_variable m_kicked;
    bool m_immediate_exit { false };
    X86VcpuState m_state { .xsave = std::vector<uint8_t>(XSAVE_SIZE) };
};

class FakeVm final : public Vm {
public:
    Expected<void> map_memory(GuestMemory const& memory) override;
    // Records only the pages tests mark with mark_page_dirty().
    Expected<void> enable_dirty_logging() override;
    Expected<std::vector<uint64_t>> take_dirty_log(size_t region_index) override;
    // As if a vCPU wrote page `page` of region `region_index` (needs dirty logging on).
    void mark_page_dirty(size_t region_index, uint64_t page);
    bool dirty_logging() const { return m_dirty_logging; }
    Expected<void> create_irqchip_and_pit() override;
    Expected<void> set_irq_line(uint32_t gsi, bool level) override;
    Expected<void> map_read_only(uint64_t start, std::span<std::byte const> image) override;
    Expected<void> set_tss_address(uint64_t address) override {
        m_tss_address = address;
        return {};
    }
    Expected<void> set_identity_map_address(uint64_t address) override {
        m_identity_map_address = address;
        return {};
    }
    Expected<std::vector<CpuidEntry>> supported_cpuid() const override { return m_supported_cpuid; }
    uint32_t max_vcpus() const override { return 64; }
    // Hands out the script queued for this index by add_vcpu_script (empty if none).
    Expected<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index) override;

    Expected<void> register_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) override;
    Expected<void> unregister_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) override;
    Expected<void> register_irqfd(int event_fd, uint32_t gsi) override;
    // Keeps the state it is given; both need the irqchip, as on KVM.
    Expected<X86VmState> save_state() override;
    Expected<void> restore_state(X86VmState const& state) override;

    struct IoEventFd {
        uint64_t address;
        uint32_t length;
        uint64_t datamatch;
        int event_fd;
        bool operator==(IoEventFd const&) const = default;
    };
    std::vector<IoEventFd> ioeventfds() const;
    std::vector<std::pair<int, uint32_t>> irqfds() const;

    void add_vcpu_script(uint32_t index, std::deque<ScriptedExit> script);
    // The vCPU create_vcpu() made for `index` (null if none); valid while its owner keeps it.
    FakeVcpu* vcpu(uint32_t index) const;
    void set_supported_cpuid(std::vector<CpuidEntry> entries) { m_supported_cpuid = std::move(entries); }

    struct IrqEvent {
        uint32_t gsi;
        bool level;
    };
    std::vector<IrqEvent> irq_events() const;
    size_t mapped_regions() const { return m_mapped_regions; }
    // What map_read_only() was given: the guest address and a copy of the bytes.
    struct ReadOnlyRegion {
        uint64_t start;
        std::vector<std::byte> bytes;
    };
    std::vector<ReadOnlyRegion> const& read_only_regions() const { return m_read_only_regions; }
    uint64_t tss_address() const { return m_tss_address; }
    uint64_t identity_map_address() const { return m_identity_map_address; }
    bool has_irqchip() const { return m_has_irqchip; }

private:
    mutable Mutex m_lock; // guards m_irq_events
    std::vector<IrqEvent> m_irq_events GUARDED_BY(m_lock);
    std::vector<IoEventFd> m_ioeventfds;
    std::vector<std::pair<int, uint32_t>> m_irqfds;
    std::vector<std::pair<uint32_t, std::deque<ScriptedExit>>> m_scripts;
    std::vector<FakeVcpu*> m_vcpus;
    std::vector<CpuidEntry> m_supported_cpuid;
    size_t m_mapped_regions { 0 };
    std::vector<ReadOnlyRegion> m_read_only_regions;
    uint64_t m_tss_address { 0 };
    uint64_t m_identity_map_address { 0 };
    std::vector<uint64_t> m_region_pages;               // pages per mapped region
    std::vector<std::vector<uint64_t>> m_dirty_bitmaps; // per region, while logging
    bool m_dirty_logging { false };
    bool m_has_irqchip { false };
    X86VmState m_state {};
};

} // namespace kvmm

#include "hypervisor/fake/fake_vm.h"

#include <algorithm>

namespace kvmm {

void FakeVcpu::set_immediate_exit(bool enabled) {
    {
        std::lock_guard guard(m_kick_lock);
        m_immediate_exit = enabled;
    }
    m_kicked.notify_all();
}

Expected<VcpuExit> FakeVcpu::run() {
    {
        std::unique_lock guard(m_kick_lock);
        bool const waits = !m_script.empty() && m_script.front().kind == ScriptedExit::Kind::WaitForKick;
        if (waits) {
            m_kicked.wait(guard, [this] { return m_immediate_exit; });
            m_script.pop_front();
        }
        if (m_immediate_exit)
            return VcpuExit { vcpu_exit::Interrupted {} };
    }
    if (m_script.empty())
        return VcpuExit { vcpu_exit::Shutdown {} };
    m_current = std::move(m_script.front());
    m_script.pop_front();
    auto& data = m_current.data;
    auto const port = static_cast<uint16_t>(m_current.address);
    auto const width = static_cast<uint8_t>(data.size());
    switch (m_current.kind) {
    case ScriptedExit::Kind::IoIn:
        return VcpuExit { vcpu_exit::IoIn { port, width, 1, std::span<uint8_t>(data) } };
    case ScriptedExit::Kind::IoOut:
        return VcpuExit { vcpu_exit::IoOut { port, width, 1, std::span<uint8_t const>(data) } };
    case ScriptedExit::Kind::MmioRead:
        return VcpuExit { vcpu_exit::MmioRead { m_current.address, std::span<uint8_t>(data) } };
    case ScriptedExit::Kind::MmioWrite:
        return VcpuExit { vcpu_exit::MmioWrite { m_current.address, std::span<uint8_t const>(data) } };
    case ScriptedExit::Kind::Halt:
        return VcpuExit { vcpu_exit::Halt {} };
    case ScriptedExit::Kind::Shutdown:
        return VcpuExit { vcpu_exit::Shutdown {} };
    case ScriptedExit::Kind::PowerOff:
        return VcpuExit { vcpu_exit::SystemEvent { vcpu_exit::SystemEvent::Kind::PowerOff, 1 } };
    case ScriptedExit::Kind::InternalError:
        return VcpuExit { vcpu_exit::InternalError { "scripted internal error" } };
    case ScriptedExit::Kind::WaitForKick: // consumed above
        return VcpuExit { vcpu_exit::Interrupted {} };
    }
    return VcpuExit { vcpu_exit::Unknown { 0 } };
}

Expected<void> FakeVcpu::set_registers(X86Registers const& registers) {
    m_state.registers = registers;
    return {};
}

Expected<void> FakeVcpu::set_special_registers(X86SpecialRegisters const& special) {
    m_state.special_registers = special;
    return {};
}

Expected<void> FakeVcpu::set_cpuid(std::span<CpuidEntry const> entries) {
    if (entries.size() > X86VcpuState::MAX_CPUID_ENTRIES)
        return Error::format("{} CPUID entries, at most {}", entries.size(), X86VcpuState::MAX_CPUID_ENTRIES);
    m_state.cpuid.assign(entries.begin(), entries.end());
    return {};
}

Expected<void> FakeVcpu::set_msrs(std::span<MsrEntry const> entries) {
    m_state.msrs.assign(entries.begin(), entries.end());
    return {};
}

Expected<void> FakeVcpu::set_lapic(LapicState const& lapic) {
    m_state.lapic = lapic;
    return {};
}

Expected<void> FakeVcpu::restore_state(X86VcpuState const& state) {
    TRY(state.check());
    if (state.xsave.size() != XSAVE_SIZE)
        return Error::format("vcpu state xsave: {} bytes, this vCPU's XSAVE area has {}", state.xsave.size(),
                             XSAVE_SIZE);
    m_state = state;
    return {};
}

Expected<void> FakeVm::map_memory(GuestMemory const& memory) {
    m_mapped_regions = memory.regions().size();
    m_region_pages.clear();
    for (auto const& region : memory.regions())
        m_region_pages.push_back(region.size / 4096);
    return {};
}

Expected<void> FakeVm::map_read_only(uint64_t start, std::span<std::byte const> image) {
    if (image.empty() || image.size() % 4096 != 0 || start % 4096 != 0)
        return Error::format("read-only mapping at {:#x} of {:#x} bytes is not page-aligned", start, image.size());
    m_read_only_regions.push_back(ReadOnlyRegion { start, std::vector<std::byte>(image.begin(), image.end()) });
    return {};
}

Expected<void> FakeVm::enable_dirty_logging() {
    if (m_region_pages.empty())
        return Error("dirty page logging needs guest memory mapped first");
    m_dirty_bitmaps.clear();
    for (auto const pages : m_region_pages)
        m_dirty_bitmaps.emplace_back((pages + 63) / 64);
    m_dirty_logging = true;
    return {};
}

Expected<std::vector<uint64_t>> FakeVm::take_dirty_log(size_t region_index) {
    if (!m_dirty_logging)
        return Error("dirty page logging is not enabled on this VM");
    if (region_index >= m_dirty_bitmaps.size())
        return Error::format("no memory slot {} (the VM has {})", region_index, m_dirty_bitmaps.size());
    auto& bitmap = m_dirty_bitmaps[region_index];
    std::vector<uint64_t> taken(bitmap.size());
    taken.swap(bitmap);
    return taken;
}

void FakeVm::mark_page_dirty(size_t region_index, uint64_t page) {
    if (m_dirty_logging && region_index < m_dirty_bitmaps.size() && page < m_region_pages[region_index])
        m_dirty_bitmaps[region_index][page / 64] |= uint64_t { 1 } << (page % 64);
}

Expected<void> FakeVm::create_irqchip_and_pit() {
    if (m_has_irqchip)
        return Error("irqchip created twice");
    m_has_irqchip = true;
    return {};
}

Expected<void> FakeVm::set_irq_line(uint32_t gsi, bool level) {
    if (!m_has_irqchip)
        return Error::format("interrupt line {} raised before the irqchip exists", gsi);
    MutexLock guard(m_lock);
    m_irq_events.push_back(IrqEvent { gsi, level });
    return {};
}

Expected<X86VmState> FakeVm::save_state() {
    if (!m_has_irqchip)
        return Error("VM state: no in-kernel irqchip to save (create_irqchip_and_pit first)");
    return m_state;
}

Expected<void> FakeVm::restore_state(X86VmState const& state) {
    if (!m_has_irqchip)
        return Error("VM state: no in-kernel irqchip to restore into (create_irqchip_and_pit first)");
    m_state = state;
    return {};
}

std::vector<FakeVm::IrqEvent> FakeVm::irq_events() const {
    MutexLock guard(m_lock);
    return m_irq_events;
}

Expected<std::unique_ptr<Vcpu>> FakeVm::create_vcpu(uint32_t index) {
    std::deque<ScriptedExit> script;
    for (auto& [script_index, exits] : m_scripts) {
        if (script_index == index)
            script = std::move(exits);
    }
    auto vcpu = std::make_unique<FakeVcpu>(index, std::move(script));
    m_vcpus.push_back(vcpu.get());
    return std::unique_ptr<Vcpu>(std::move(vcpu));
}

FakeVcpu* FakeVm::vcpu(uint32_t index) const {
    auto found = std::find_if(m_vcpus.begin(), m_vcpus.end(), [&](FakeVcpu* vcpu) { return vcpu->index() == index; });
    return found == m_vcpus.end() ? nullptr : *found;
}

void FakeVm::add_vcpu_script(uint32_t index, std::deque<ScriptedExit> script) {
    m_scripts.emplace_back(index, std::move(script));
}

Expected<void> FakeVm::register_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) {
    MutexLock guard(m_lock);
    IoEventFd const entry { address, length, datamatch, event_fd };
    if (std::find(m_ioeventfds.begin(), m_ioeventfds.end(), entry) != m_ioeventfds.end())
        return Error::format("ioeventfd at {:#x} value {} registered twice", address, datamatch);
    m_ioeventfds.push_back(entry);
    return {};
}

Expected<void> FakeVm::unregister_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) {
    MutexLock guard(m_lock);
    auto found =
        std::find(m_ioeventfds.begin(), m_ioeventfds.end(), IoEventFd { address, length, datamatch, event_fd });
    if (found == m_ioeventfds.end())
        return Error::format("no ioeventfd at {:#x} value {}", address, datamatch);
    m_ioeventfds.erase(found);
    return {};
}

Expected<void> FakeVm::register_irqfd(int event_fd, uint32_t gsi) {
    MutexLock guard(m_lock);
    m_irqfds.emplace_back(event_fd, gsi);
    return {};
}

std::vector<FakeVm::IoEventFd> FakeVm::ioeventfds() const {
    MutexLock guard(m_lock);
    return m_ioeventfds;
}

std::vector<std::pair<int, uint32_t>> FakeVm::irqfds() const {
    MutexLock guard(m_lock);
    return m_irqfds;
}

} // namespace kvmm

#include "hypervisor/kvm/kvm_vm.h"

#include "hypervisor/kvm/kvm_abi.h"
#include "hypervisor/kvm/kvm_vcpu.h"

#include <algorithm>
#include <cerrno>
#include <linux/kvm.h>
#include <memory>
#include <sys/ioctl.h>

namespace kvmm {

Expected<void> KvmVm::set_slot(Slot const& slot, uint32_t flags) {
    kvm_userspace_memory_region kvm_region {};
    kvm_region.slot = slot.slot;
    kvm_region.flags = flags;
    kvm_region.guest_phys_addr = slot.guest_address;
    kvm_region.memory_size = slot.size;
    kvm_region.userspace_addr = slot.host_address;
    if (::ioctl(m_vm_fd.get(), KVM_SET_USER_MEMORY_REGION, &kvm_region) != 0)
        return Error::from_errno(fmt::format("KVM_SET_USER_MEMORY_REGION slot {} at {:#x} size {:#x} flags {:#x}",
                                             slot.slot, slot.guest_address, slot.size, flags));
    return {};
}

Expected<void> KvmVm::map_memory(GuestMemory const& memory) {
    if (!m_slots.empty())
        return Error("guest memory is already mapped into this VM");
    for (auto const& region : memory.regions()) {
        Slot const slot { m_next_slot++, region.start.value(), region.size,
                          reinterpret_cast<uint64_t>(region.mapping.data()) };
        TRY(set_slot(slot, 0));
        m_slots.push_back(slot);
    }
    return {};
}

Expected<void> KvmVm::map_read_only(uint64_t start, std::span<std::byte const> image) {
    constexpr uint64_t PAGE_SIZE = 4096;
    if (image.empty() || image.size() % PAGE_SIZE != 0 || start % PAGE_SIZE != 0)
        return Error::format("read-only mapping at {:#x} of {:#x} bytes is not page-aligned", start, image.size());
    kvm_userspace_memory_region kvm_region {};
    kvm_region.slot = m_next_slot++;
    // KVM_MEM_READONLY (api.rst, KVM_SET_USER_MEMORY_REGION): guest writes exit as MMIO.
    kvm_region.flags = KVM_MEM_READONLY;
    kvm_region.guest_phys_addr = start;
    kvm_region.memory_size = image.size();
    kvm_region.userspace_addr = reinterpret_cast<uint64_t>(image.data());
    if (::ioctl(m_vm_fd.get(), KVM_SET_USER_MEMORY_REGION, &kvm_region) != 0)
        return Error::from_errno(fmt::format("KVM_SET_USER_MEMORY_REGION read-only slot {} at {:#x} size {:#x}",
                                             kvm_region.slot, start, kvm_region.memory_size));
    return {};
}

Expected<void> KvmVm::enable_dirty_logging() {
    if (m_slots.empty())
        return Error("dirty page logging needs guest memory mapped first");
    // Changing only a slot's flags is allowed on a live slot (KVM API, KVM_SET_USER_MEMORY_REGION).
    for (auto const& slot : m_slots)
        TRY(set_slot(slot, KVM_MEM_LOG_DIRTY_PAGES).with_context("enabling dirty page logging"));
    m_dirty_logging = true;
    return {};
}

Expected<std::vector<uint64_t>> KvmVm::take_dirty_log(size_t region_index) {
    if (!m_dirty_logging)
        return Error("dirty page logging is not enabled on this VM");
    if (region_index >= m_slots.size())
        return Error::format("no memory slot {} (the VM has {})", region_index, m_slots.size());
    auto const& slot = m_slots[region_index];
    // KVM fills one bit per page, in a buffer of whole 64-bit words.
    std::vector<uint64_t> bitmap((slot.size / 4096 + 63) / 64);
    kvm_dirty_log log {};
    log.slot = slot.slot;
    log.dirty_bitmap = bitmap.data();
    if (::ioctl(m_vm_fd.get(), KVM_GET_DIRTY_LOG, &log) != 0)
        return Error::from_errno(fmt::format("KVM_GET_DIRTY_LOG slot {}", slot.slot));
    return bitmap;
}

Expected<void> KvmVm::create_irqchip_and_pit() {
    if (::ioctl(m_vm_fd.get(), KVM_CREATE_IRQCHIP, 0) != 0)
        return Error::from_errno("KVM_CREATE_IRQCHIP");
    TRY(set_pc_irq_routing());
    // The dummy speaker makes port 0x61 (PC speaker/PIT gate) work without user-space help.
    kvm_pit_config pit {};
    pit.flags = KVM_PIT_SPEAKER_DUMMY;
    if (::ioctl(m_vm_fd.get(), KVM_CREATE_PIT2, &pit) != 0)
        return Error::from_errno("KVM_CREATE_PIT2");
    m_has_irqchip = true;
    return {};
}

Expected<void> KvmVm::set_pc_irq_routing() {
    // The wiring of a PC, as the MADT describes it: ISA IRQs 0-15 reach the 8259 pair (except
    // the cascade, IRQ 2) and the IOAPIC pin of the same number, except that IRQ 0 (the PIT)
    // arrives on IOAPIC pin 2 (the interrupt source override). GSIs 16-23 are IOAPIC-only.
    // KVM's default table routes GSI 0 to IOAPIC pin 0, where no OS looks for the timer.
    constexpr uint32_t IOAPIC_PINS = 24;
    std::vector<kvm_irq_routing_entry> entries;
    auto add = [&](uint32_t gsi, uint32_t chip, uint32_t pin) {
        kvm_irq_routing_entry entry {};
        entry.gsi = gsi;
        entry.type = KVM_IRQ_ROUTING_IRQCHIP;
        entry.u.irqchip.irqchip = chip;
        entry.u.irqchip.pin = pin;
        entries.push_back(entry);
    };
    for (uint32_t irq = 0; irq < 16; ++irq) {
        if (irq != 2)
            add(irq, irq < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, irq % 8);
    }
    for (uint32_t gsi = 0; gsi < IOAPIC_PINS; ++gsi) {
        if (gsi == 0)
            add(0, KVM_IRQCHIP_IOAPIC, 2);
        else if (gsi != 2)
            add(gsi, KVM_IRQCHIP_IOAPIC, gsi);
    }
    kvm_abi::IrqRoutingTable table(entries.size());
    table.header()->nr = static_cast<uint32_t>(entries.size());
    for (size_t i = 0; i < entries.size(); ++i)
        table.entries()[i] = entries[i];
    if (::ioctl(m_vm_fd.get(), kvm_abi::SET_GSI_ROUTING, table.data()) != 0)
        return Error::from_errno("KVM_SET_GSI_ROUTING");
    return {};
}

Expected<void> KvmVm::set_irq_line(uint32_t gsi, bool level) {
    kvm_irq_level irq_level {};
    irq_level.irq = gsi;
    irq_level.level = level ? 1 : 0;
    if (::ioctl(m_vm_fd.get(), KVM_IRQ_LINE, &irq_level) != 0)
        return Error::from_errno(fmt::format("KVM_IRQ_LINE gsi {}", gsi));
    return {};
}

Expected<void> KvmVm::set_tss_address(uint64_t address) {
    if (::ioctl(m_vm_fd.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(address)) != 0)
        return Error::from_errno(fmt::format("KVM_SET_TSS_ADDR {:#x}", address));
    return {};
}

Expected<void> KvmVm::set_identity_map_address(uint64_t address) {
    auto value = address;
    if (::ioctl(m_vm_fd.get(), KVM_SET_IDENTITY_MAP_ADDR, &value) != 0)
        return Error::from_errno(fmt::format("KVM_SET_IDENTITY_MAP_ADDR {:#x}", address));
    return {};
}

Expected<std::vector<CpuidEntry>> KvmVm::supported_cpuid() const {
    // The kernel says E2BIG until the buffer is large enough; grow it a few times.
    for (uint32_t capacity = 128; capacity <= 4096; capacity *= 2) {
        kvm_abi::CpuidTable table(capacity);
        table.header()->nent = capacity;
        if (::ioctl(m_kvm_fd.get(), kvm_abi::GET_SUPPORTED_CPUID, table.data()) != 0) {
            if (errno == E2BIG)
                continue;
            return Error::from_errno("KVM_GET_SUPPORTED_CPUID");
        }
        std::vector<CpuidEntry> entries;
        entries.reserve(table.header()->nent);
        for (uint32_t i = 0; i < table.header()->nent; ++i) {
            auto const& entry = table.entries()[i];
            entries.push_back(
                CpuidEntry { entry.function, entry.index, entry.flags, entry.eax, entry.ebx, entry.ecx, entry.edx });
        }
        return entries;
    }
    return Error("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

Expected<std::unique_ptr<Vcpu>> KvmVm::create_vcpu(uint32_t index) {
    if (index >= m_max_vcpus)
        return Error::format("vCPU index {} is beyond KVM's maximum of {} vCPUs", index, m_max_vcpus);
    int fd = ::ioctl(m_vm_fd.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(index));
    if (fd < 0)
        return Error::from_errno(fmt::format("KVM_CREATE_VCPU {}", index));
    UniqueFd vcpu_fd(fd);
    if (!m_state_support) {
        // A host that cannot save vCPU state still runs vCPUs: save/restore say why instead.
        auto support = query_state_support();
        if (support)
            m_state_support = std::move(*support);
        else
            m_state_support =
                std::make_shared<KvmStateSupport const>(KvmStateSupport { {}, 4096, false, support.error().message() });
    }
    return KvmVcpu::create(std::move(vcpu_fd), index, m_vcpu_mmap_size, m_state_support);
}

Expected<std::shared_ptr<KvmStateSupport const>> KvmVm::query_state_support() const {
    auto support = std::make_shared<KvmStateSupport>();
    // The first call, with room for none, says how many there are (E2BIG).
    kvm_abi::MsrList probe(0);
    probe.header()->nmsrs = 0;
    if (::ioctl(m_kvm_fd.get(), kvm_abi::GET_MSR_INDEX_LIST, probe.data()) != 0 && errno != E2BIG)
        return Error::from_errno("KVM_GET_MSR_INDEX_LIST");
    uint32_t const count = probe.header()->nmsrs;
    if (count > X86VcpuState::MAX_MSRS)
        return Error::format("KVM_GET_MSR_INDEX_LIST: {} saveable MSRs, kvmm saves at most {}", count,
                             X86VcpuState::MAX_MSRS);
    kvm_abi::MsrList list(count);
    list.header()->nmsrs = count;
    if (::ioctl(m_kvm_fd.get(), kvm_abi::GET_MSR_INDEX_LIST, list.data()) != 0)
        return Error::from_errno("KVM_GET_MSR_INDEX_LIST");
    support->saveable_msrs.assign(list.entries(), list.entries() + std::min(count, list.header()->nmsrs));

    if (::ioctl(m_vm_fd.get(), KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) <= 0)
        return Error("the host's KVM lacks KVM_CAP_XSAVE, which saving a vCPU's state needs");
    // KVM_CAP_XSAVE2, asked of the VM, gives the size of its XSAVE area (0 without it).
    int const xsave2_size = ::ioctl(m_vm_fd.get(), KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    support->has_xsave2 = xsave2_size > 0;
    support->xsave_size = xsave2_size > 4096 ? static_cast<uint32_t>(xsave2_size) : 4096;
    if (support->xsave_size > X86VcpuState::MAX_XSAVE_SIZE)
        return Error::format("KVM_CAP_XSAVE2: an XSAVE area of {} bytes, kvmm saves at most {}", support->xsave_size,
                             X86VcpuState::MAX_XSAVE_SIZE);
    return std::shared_ptr<KvmStateSupport const>(std::move(support));
}

namespace {

kvm_ioeventfd make_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) {
    kvm_ioeventfd ioeventfd {};
    ioeventfd.datamatch = datamatch;
    ioeventfd.addr = address;
    ioeventfd.len = length;
    ioeventfd.fd = event_fd;
    ioeventfd.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
    return ioeventfd;
}

} // namespace

Expected<void> KvmVm::register_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) {
    auto ioeventfd = make_ioeventfd(address, length, datamatch, event_fd);
    if (::ioctl(m_vm_fd.get(), KVM_IOEVENTFD, &ioeventfd) != 0)
        return Error::from_errno(
            fmt::format("KVM_IOEVENTFD at {:#x} (length {}, value {})", address, length, datamatch));
    return {};
}

Expected<void> KvmVm::unregister_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) {
    auto ioeventfd = make_ioeventfd(address, length, datamatch, event_fd);
    ioeventfd.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
    if (::ioctl(m_vm_fd.get(), KVM_IOEVENTFD, &ioeventfd) != 0)
        return Error::from_errno(fmt::format("KVM_IOEVENTFD deassign at {:#x}", address));
    return {};
}

Expected<void> KvmVm::register_irqfd(int event_fd, uint32_t gsi) {
    kvm_irqfd irqfd {};
    irqfd.fd = static_cast<uint32_t>(event_fd);
    irqfd.gsi = gsi;
    if (::ioctl(m_vm_fd.get(), KVM_IRQFD, &irqfd) != 0)
        return Error::from_errno(fmt::format("KVM_IRQFD for GSI {}", gsi));
    return {};
}

} // namespace kvmm

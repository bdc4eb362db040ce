// KvmVm: a VM on /dev/kvm. See hypervisor/vm.h for the contract.
#pragma once

#include "base/unique_fd.h"
#include "hypervisor/kvm/kvm_vcpu.h"
#include "hypervisor/vm.h"

#include <memory>
#include <vector>

namespace kvmm {

class KvmVm final : public Vm {
public:
    KvmVm(UniqueFd kvm_fd, UniqueFd vm_fd, int vcpu_mmap_size, uint32_t max_vcpus)
        : m_kvm_fd(std::move(kvm_fd)), m_vm_fd(std::move(vm_fd)), m_vcpu_mmap_size(vcpu_mmap_size),
          m_max_vcpus(max_vcpus) {}

    Expected<void> map_memory(GuestMemory const& memory) override;
    Expected<void> map_read_only(uint64_t start, std::span<std::byte const> image) override;
    // KVM_MEM_LOG_DIRTY_PAGES on every slot; KVM_GET_DIRTY_LOG (which also clears the log when
    // manual protection is not enabled, as here).
    Expected<void> enable_dirty_logging() override;
    Expected<std::vector<uint64_t>> take_dirty_log(size_t region_index) override;
    Expected<void> create_irqchip_and_pit() override;
    Expected<void> set_irq_line(uint32_t gsi, bool level) override;
    Expected<void> set_tss_address(uint64_t address) override;
    Expected<void> set_identity_map_address(uint64_t address) override;
    Expected<std::vector<CpuidEntry>> supported_cpuid() const override;
    uint32_t max_vcpus() const override { return m_max_vcpus; }
    Expected<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index) override;
    Expected<void> register_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) override;
    Expected<void> unregister_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) override;
    Expected<void> register_irqfd(int event_fd, uint32_t gsi) override;
    // In kvm_vm_state.cc, with the calls and their order.
    Expected<X86VmState> save_state() override;
    Expected<void> restore_state(X86VmState const& state) override;

private:
    Expected<void> set_pc_irq_routing();
    // Asked of KVM once, at the first vCPU, and shared by all of them.
    Expected<std::shared_ptr<KvmStateSupport const>> query_state_support() const;
    // The KVM calls of restore_state(), in their order.
    Expected<void> apply_state(X86VmState const& state);

    // The slots map_memory registered (slot, flags, guest address, size, host address), to
    // register them again with dirty logging on.
    struct Slot {
        uint32_t slot;
        uint64_t guest_address;
        uint64_t size;
        uint64_t host_address;
    };
    Expected<void> set_slot(Slot const& slot, uint32_t flags);

    UniqueFd m_kvm_fd; // system fd, for KVM_GET_SUPPORTED_CPUID
    UniqueFd m_vm_fd;
    int m_vcpu_mmap_size;
    uint32_t m_max_vcpus;
    std::shared_ptr<KvmStateSupport const> m_state_support;
    bool m_has_irqchip { false };
    uint32_t m_next_slot { 0 }; // memory slots are numbered in the order they are mapped
    std::vector<Slot> m_slots;
    bool m_dirty_logging { false };
};

} // namespace kvmm

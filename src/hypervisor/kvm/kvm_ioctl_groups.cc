#include "hypervisor/kvm/kvm_ioctl_groups.h"

#include "hypervisor/kvm/kvm_abi.h"

#include <linux/kvm.h>

namespace kvmm::kvm_ioctl_groups {

std::vector<uint64_t> vcpu_run() { return { KVM_RUN }; }

std::vector<uint64_t> vcpu_diagnostics() { return { KVM_GET_REGS, KVM_GET_SREGS }; }

std::vector<uint64_t> interrupt_line() { return { KVM_IRQ_LINE }; }

std::vector<uint64_t> device_wiring() { return { KVM_IOEVENTFD, KVM_IRQFD }; }

std::vector<uint64_t> dirty_log() { return { KVM_GET_DIRTY_LOG }; }

std::vector<uint64_t> save_state() {
    return {
        // vCPU state (kvm_vcpu_state.cc)
        KVM_GET_REGS,
        KVM_GET_SREGS,
        kvm_abi::GET_MSRS,
        KVM_GET_FPU,
        kvm_abi::GET_XSAVE,
        kvm_abi::GET_XSAVE2,
        KVM_GET_XCRS,
        KVM_GET_LAPIC,
        KVM_GET_MP_STATE,
        KVM_GET_VCPU_EVENTS,
        KVM_GET_DEBUGREGS,
        kvm_abi::GET_CPUID2,
        // on the /dev/kvm and VM descriptors: the MSR list and XSAVE size the state needs
        kvm_abi::GET_MSR_INDEX_LIST,
        KVM_CHECK_EXTENSION,
        // VM state (kvm_vm_state.cc)
        KVM_GET_IRQCHIP,
        KVM_GET_PIT2,
        KVM_GET_CLOCK,
    };
}

} // namespace kvmm::kvm_ioctl_groups

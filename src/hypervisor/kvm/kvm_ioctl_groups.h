// The KVM ioctl requests kvmm's threads issue once the machine is built, in the groups the
// seccomp table allows (sandbox/seccomp_table.h). Here because only hypervisor/kvm may include
// <linux/kvm.h>. Each list names what kvm_vcpu*.cc and kvm_vm*.cc call at run time; requests
// of the build (KVM_CREATE_*, KVM_SET_CPUID2, KVM_SET_TSS_ADDR, ...) are in none of them.
//
// Threading: pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace kvmm::kvm_ioctl_groups {

std::vector<uint64_t> vcpu_run();         // KVM_RUN
std::vector<uint64_t> vcpu_diagnostics(); // log_register_dump: KVM_GET_REGS, KVM_GET_SREGS
std::vector<uint64_t> interrupt_line();   // KVM_IRQ_LINE
std::vector<uint64_t> device_wiring();    // KVM_IOEVENTFD, KVM_IRQFD
std::vector<uint64_t> save_state();       // KvmVcpu::save_state, KvmVm::save_state
std::vector<uint64_t> dirty_log();        // KvmVm::take_dirty_log: KVM_GET_DIRTY_LOG

} // namespace kvmm::kvm_ioctl_groups

// KvmVcpu: a vCPU on /dev/kvm with its shared kvm_run page. See hypervisor/vcpu.h.
// Its saved state (save_state/restore_state) is in kvm_vcpu_state.cc, with the order of
// the KVM calls and why.
#pragma once

#include "base/unique_fd.h"
#include "hypervisor/vcpu.h"

#include <array>
#include <memory>
#include <string>
#include <vector>

struct kvm_run;

namespace kvmm {

// What the host's KVM says once per VM about the state it can save for a vCPU.
struct KvmStateSupport {
    // KVM_GET_MSR_INDEX_LIST: the MSRs KVM can save and restore, in its order.
    std::vector<uint32_t> saveable_msrs;
    // The size of the XSAVE area (KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2), at least 4096), and
    // whether KVM_GET_XSAVE2 exists (else KVM_GET_XSAVE with 4096 bytes).
    uint32_t xsave_size { 4096 };
    bool has_xsave2 { false };
    // Why the state cannot be saved on this host, if it cannot (the vCPU still runs).
    std::string unavailable {};
};

class KvmVcpu final : public Vcpu {
public:
    static Expected<std::unique_ptr<Vcpu>> create(UniqueFd fd, uint32_t index, int mmap_size,
                                                  std::shared_ptr<KvmStateSupport const> support);
    ~KvmVcpu() override;

    uint32_t index() const override { return m_index; }
    Expected<VcpuExit> run() override;
    void set_immediate_exit(bool enabled) override;

    Expected<X86Registers> registers() const override;
    Expected<void> set_registers(X86Registers const&) override;
    Expected<X86SpecialRegisters> special_registers() const override;
    Expected<void> set_special_registers(X86SpecialRegisters const&) override;
    Expected<void> set_cpuid(std::span<CpuidEntry const>) override;
    Expected<void> set_msrs(std::span<MsrEntry const>) override;
    Expected<void> reset_fpu() override;
    Expected<LapicState> lapic() const override;
    Expected<void> set_lapic(LapicState const&) override;
    Expected<X86VcpuState> save_state() override;
    Expected<void> restore_state(X86VcpuState const& state) override;

private:
    KvmVcpu(UniqueFd fd, uint32_t index, kvm_run* run, int mmap_size, std::shared_ptr<KvmStateSupport const> support)
        : m_fd(std::move(fd)), m_index(index), m_run(run), m_mmap_size(mmap_size), m_support(std::move(support)) {}

    VcpuExit decode_exit();
    // Parts of save_state/restore_state (kvm_vcpu_state.cc).
    Expected<void> finish_pending_instruction();
    // Reads every part as it is now, without finishing an instruction first (the rollback copy
    // of a restore, which overwrites everything anyway).
    Expected<X86VcpuState> read_state();
    Expected<std::vector<MsrEntry>> saveable_msrs() const;
    Expected<std::vector<CpuidEntry>> current_cpuid() const;
    Expected<void> check_restorable(X86VcpuState const& state) const;
    // The KVM calls of restore_state(), in their order.
    Expected<void> apply_state(X86VcpuState const& state);
    // KVM_GET/SET_SREGS with the injected-interrupt bitmap (kept as it is when null).
    Expected<X86SpecialRegisters> read_special_registers(std::array<uint64_t, 4>* interrupt_bitmap) const;
    Expected<void> write_special_registers(X86SpecialRegisters const& special,
                                           std::array<uint64_t, 4> const* interrupt_bitmap);

    UniqueFd m_fd;
    uint32_t m_index;
    kvm_run* m_run; // shared with the kernel; owned (munmap in the destructor)
    int m_mmap_size;
    std::shared_ptr<KvmStateSupport const> m_support; // shared by the VM's vCPUs
};

} // namespace kvmm

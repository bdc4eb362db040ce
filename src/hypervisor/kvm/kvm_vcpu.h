// KvmVcpu: a vCPU on /dev/kvm with its shared kvm_run page. See hypervisor/vcpu.h.
#pragma once

#include "base/unique_fd.h"
#include "hypervisor/vcpu.h"

#include <memory>

struct kvm_run;

namespace kvmm {

class KvmVcpu final : public Vcpu {
public:
    static Expected<std::unique_ptr<Vcpu>> create(UniqueFd fd, uint32_t index, int mmap_size);
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

private:
    KvmVcpu(UniqueFd fd, uint32_t index, kvm_run* run, int mmap_size)
        : m_fd(std::move(fd)), m_index(index), m_run(run), m_mmap_size(mmap_size) {}

    VcpuExit decode_exit();

    UniqueFd m_fd;
    uint32_t m_index;
    kvm_run* m_run; // shared with the kernel; owned (munmap in the destructor)
    int m_mmap_size;
};

} // namespace kvmm

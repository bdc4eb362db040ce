// FakeHypervisor: hands out FakeVms, so that unit tests build and run a whole machine
// without /dev/kvm. Scripts and CPUID set here go to every VM it creates; a test reaches the
// VM a builder made (its ioeventfds, irqfds, interrupt events, vCPUs) through last_vm().
//
// Threading: one thread (the builder's); last_vm() is valid while the VM's owner keeps it.
#pragma once

#include "hypervisor/fake/fake_vm.h"
#include "hypervisor/hypervisor.h"

#include <deque>
#include <optional>
#include <utility>
#include <vector>

namespace kvmm {

class FakeHypervisor final : public Hypervisor {
public:
    Expected<std::unique_ptr<Vm>> create_vm() override;

    // vCPU `index` of the next VMs replays `script` (FakeVcpu).
    void add_vcpu_script(uint32_t index, std::deque<ScriptedExit> script);
    void set_supported_cpuid(std::vector<CpuidEntry> entries) { m_supported_cpuid = std::move(entries); }
    // The next create_vm() fails with `error` (a host without the hypervisor).
    void fail_next_create_vm(Error error) { m_failure = std::move(error); }

    FakeVm* last_vm() const { return m_last_vm; }

private:
    std::vector<std::pair<uint32_t, std::deque<ScriptedExit>>> m_scripts;
    std::vector<CpuidEntry> m_supported_cpuid;
    std::optional<Error> m_failure;
    FakeVm* m_last_vm { nullptr };
};

} // namespace kvmm

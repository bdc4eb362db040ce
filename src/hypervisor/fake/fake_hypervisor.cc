#include "hypervisor/fake/fake_hypervisor.h"

namespace kvmm {

Expected<std::unique_ptr<Vm>> FakeHypervisor::create_vm() {
    if (m_failure) {
        Error error = std::move(*m_failure);
        m_failure.reset();
        return error;
    }
    auto vm = std::make_unique<FakeVm>();
    for (auto const& [index, script] : m_scripts)
        vm->add_vcpu_script(index, script);
    vm->set_supported_cpuid(m_supported_cpuid);
    m_last_vm = vm.get();
    return std::unique_ptr<Vm>(std::move(vm));
}

void FakeHypervisor::add_vcpu_script(uint32_t index, std::deque<ScriptedExit> script) {
    m_scripts.emplace_back(index, std::move(script));
}

} // namespace kvmm

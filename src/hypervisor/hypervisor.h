// Hypervisor: where VMs come from. The machine builder is handed one (dependency injection),
// so the same builder runs on KVM in production and on hypervisor/fake in unit tests.
//
// Threading: create_vm() from the builder thread.
#pragma once

#include "base/expected.h"
#include "hypervisor/vm.h"

#include <memory>

namespace kvmm {

class Hypervisor {
public:
    virtual ~Hypervisor() = default;

    // A new, empty VM: no memory, no interrupt controllers, no vCPUs. It does not need the
    // Hypervisor object to outlive it.
    virtual Expected<std::unique_ptr<Vm>> create_vm() = 0;
};

} // namespace kvmm

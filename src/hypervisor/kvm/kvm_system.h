// KvmSystem: the open /dev/kvm, its API version and capability checks, and the
// factory for KVM-backed VMs. Errors say what is missing and what to do.
//
// Threading: create on one thread; create_vm() may be called from any thread.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"
#include "hypervisor/hypervisor.h"
#include "hypervisor/vm.h"

#include <memory>
#include <optional>

namespace kvmm {

class KvmSystem {
public:
    // Opens /dev/kvm (or `device_path`), checks the API version and every capability kvmm relies on.
    static Expected<KvmSystem> open(char const* device_path = "/dev/kvm");

    Expected<std::unique_ptr<Vm>> create_vm() const;

    int fd() const { return m_fd.get(); }

private:
    KvmSystem(UniqueFd fd, int vcpu_mmap_size) : m_fd(std::move(fd)), m_vcpu_mmap_size(vcpu_mmap_size) {}

    UniqueFd m_fd;
    int m_vcpu_mmap_size { 0 };
};

// The Hypervisor a VMM process uses: /dev/kvm (or `device_path`), opened when the first VM is
// created, so that a program checks its configuration before it needs KVM and reports bad
// input the same way on a host without it.
class KvmHypervisor final : public Hypervisor {
public:
    explicit KvmHypervisor(char const* device_path = "/dev/kvm") : m_device_path(device_path) {}

    Expected<std::unique_ptr<Vm>> create_vm() override;

private:
    char const* m_device_path;
    std::optional<KvmSystem> m_system;
};

} // namespace kvmm

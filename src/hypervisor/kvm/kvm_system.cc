#include "hypervisor/kvm/kvm_system.h"

#include "hypervisor/kvm/kvm_vm.h"

#include <cerrno>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

namespace kvmm {

namespace {

struct RequiredCapability {
    int capability;
    char const* name;
};

// Everything the VMM uses unconditionally. Checked up front so that a host that lacks one
// fails at start with the capability's name rather than later with an obscure ioctl error.
constexpr RequiredCapability REQUIRED_CAPABILITIES[] = {
    { KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP (in-kernel interrupt controllers)" },
    { KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
    { KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
    { KVM_CAP_PIT2, "KVM_CAP_PIT2 (in-kernel PIT)" },
    { KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
    { KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
    { KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD" },
    { KVM_CAP_IRQFD, "KVM_CAP_IRQFD" },
    { KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE" },
};

} // namespace

Expected<KvmSystem> KvmSystem::open(char const* device_path) {
    int fd = ::open(device_path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int const error_number = errno;
        if (error_number == ENOENT)
            return Error(fmt::format("{} does not exist: KVM is not available on this host (enable hardware "
                                     "virtualisation and load kvm_intel or kvm_amd)",
                                     device_path),
                         error_number);
        if (error_number == EACCES || error_number == EPERM)
            return Error(fmt::format("no permission to open {}: add this user to the 'kvm' group or run as root",
                                     device_path),
                         error_number);
        return Error::from_errno(fmt::format("cannot open {}", device_path), error_number);
    }
    UniqueFd kvm(fd);
    int const version = ::ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        return Error::format("{} reports KVM API version {}, kvmm needs {}", device_path, version, KVM_API_VERSION);
    for (auto const& required : REQUIRED_CAPABILITIES) {
        if (::ioctl(kvm.get(), KVM_CHECK_EXTENSION, required.capability) <= 0)
            return Error::format("the host's KVM lacks {}, which kvmm needs; a newer host kernel is required",
                                 required.name);
    }
    int const mmap_size = ::ioctl(kvm.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (mmap_size < static_cast<int>(sizeof(kvm_run)))
        return Error::from_errno("KVM_GET_VCPU_MMAP_SIZE");
    return KvmSystem(std::move(kvm), mmap_size);
}

Expected<std::unique_ptr<Vm>> KvmSystem::create_vm() const {
    int vm_fd = -1;
    // KVM_CREATE_VM can fail with EINTR while the kernel sets up the MMU notifier.
    do {
        vm_fd = ::ioctl(m_fd.get(), KVM_CREATE_VM, 0);
    } while (vm_fd < 0 && errno == EINTR);
    if (vm_fd < 0)
        return Error::from_errno("KVM_CREATE_VM");
    int max_vcpus = ::ioctl(m_fd.get(), KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (max_vcpus <= 0)
        max_vcpus = ::ioctl(m_fd.get(), KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
    if (max_vcpus <= 0)
        max_vcpus = 1;
    // The VM keeps its own handle on /dev/kvm (for KVM_GET_SUPPORTED_CPUID), so it may outlive this object.
    UniqueFd kvm_handle(::fcntl(m_fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!kvm_handle.is_valid())
        return Error::from_errno("duplicating the /dev/kvm descriptor");
    return std::unique_ptr<Vm>(
        new KvmVm(std::move(kvm_handle), UniqueFd(vm_fd), m_vcpu_mmap_size, static_cast<uint32_t>(max_vcpus)));
}

Expected<std::unique_ptr<Vm>> KvmHypervisor::create_vm() {
    if (!m_system)
        m_system.emplace(TRY(KvmSystem::open(m_device_path)));
    return m_system->create_vm();
}

} // namespace kvmm

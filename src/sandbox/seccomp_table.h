// kvmm's seccomp policy: ONE table of every system call a kvmm thread may make after it
// entered its sandbox, the thread roles (thread_role.h) that may make it, the argument
// condition and the code path that needs it. build_role_filter() turns the table into the
// filter of one role; everything a role's rows do not allow traps (sigsys_report.h).
//
// KVM's ioctl request numbers come from the one library that may include <linux/kvm.h>
// (hypervisor/kvm/kvm_ioctl_groups.h), passed in as KvmIoctls; the other request numbers
// (terminal, block device, TAP) are the kernel's UAPI constants.
//
// Threading: the table is constant; build_role_filter() is a pure function.
#pragma once

#include "base/expected.h"
#include "sandbox/seccomp_filter_spec.h"
#include "sandbox/thread_role.h"

#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace kvmm {

// Groups of ioctl requests the table allows by name.
enum class IoctlGroup : uint8_t {
    KvmVcpuRun,         // KVM_RUN
    KvmVcpuDiagnostics, // the register dump of a vCPU that died
    KvmInterruptLine,   // KVM_IRQ_LINE: legacy devices raise their ISA interrupt
    KvmDeviceWiring,    // KVM_IOEVENTFD, KVM_IRQFD: a device's eventfds (de)assigned on reset
    KvmSaveState,       // every KVM_GET_* of the saved state (snapshot create, on the event loop)
    KvmDirtyLog,        // KVM_GET_DIRTY_LOG: the pages a Diff snapshot holds
    Terminal,           // the stdio console's terminal mode
    BlockDevice,        // a block-device image's size and discard
    Tap,                // virtio-net's offloads, set when the driver negotiates them
    SocketQueue,        // FIONREAD on a client socket
};

// The KVM request numbers of each KVM group, from hypervisor/kvm.
struct KvmIoctls {
    std::vector<uint64_t> vcpu_run;
    std::vector<uint64_t> vcpu_diagnostics;
    std::vector<uint64_t> interrupt_line;
    std::vector<uint64_t> device_wiring;
    std::vector<uint64_t> save_state;
    std::vector<uint64_t> dirty_log;
};

// Role bits of a table row.
inline constexpr unsigned ROLE_VMM = 1u << static_cast<unsigned>(ThreadRole::Vmm);
inline constexpr unsigned ROLE_VCPU = 1u << static_cast<unsigned>(ThreadRole::Vcpu);
inline constexpr unsigned ROLE_API = 1u << static_cast<unsigned>(ThreadRole::Api);
inline constexpr unsigned ROLE_CONFIG_BOOT = 1u << static_cast<unsigned>(ThreadRole::ConfigBoot);
inline constexpr unsigned ROLE_ALL = ROLE_VMM | ROLE_VCPU | ROLE_API | ROLE_CONFIG_BOOT;

// What a row requires of the arguments.
struct ArgumentCondition {
    enum class Kind : uint8_t {
        Any,       // no condition
        NoExec,    // argument `index` (a PROT_* set) lacks PROT_EXEC
        OneOf,     // argument `index` (low 32 bits) is one of `values`
        FlagsSet,  // argument `index` has every bit of values[0]
        Ioctl,     // argument 1 is a request of `group`
        FailErrno, // not allowed: fails with errno values[0] (for a caller's fallback)
    };
    Kind kind { Kind::Any };
    uint8_t index { 0 };
    IoctlGroup group { IoctlGroup::KvmVcpuRun };
    std::array<uint64_t, 4> values {};
    uint8_t value_count { 0 };
};

struct SeccompTableRow {
    char const* syscall;
    unsigned roles;
    ArgumentCondition condition;
    char const* needed_by; // the code path that makes the call
};

// The table itself (seccomp_table.cc).
std::span<SeccompTableRow const> seccomp_table();

// The filter of `role`: its rows, with the default action Trap. Fails naming a row whose
// syscall name this libseccomp does not know.
Expected<SeccompRoleFilter> build_role_filter(ThreadRole role, KvmIoctls const& kvm);

} // namespace kvmm

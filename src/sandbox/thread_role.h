// The thread roles of kvmm (docs/ARCHITECTURE.md, "Processes and threads"; docs/security.md):
// each has one seccomp allow-list. The names are the keys of a --seccomp-filter file and what
// a violation's log line says; vmm, api and vcpu are Firecracker's own thread categories.
//
// Threading: constants only.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace kvmm {

enum class ThreadRole : uint8_t {
    Vmm,        // the main thread once it is the event loop: devices, disk and network I/O
    Vcpu,       // one per vCPU: KVM_RUN and the device registers behind the buses
    Api,        // the API server thread (--api-sock, --control-sock)
    ConfigBoot, // the --config-file helper that applies the file through the API object
};

inline constexpr std::array<ThreadRole, 4> ALL_THREAD_ROLES { ThreadRole::Vmm, ThreadRole::Vcpu, ThreadRole::Api,
                                                              ThreadRole::ConfigBoot };

constexpr std::string_view thread_role_name(ThreadRole role) {
    switch (role) {
    case ThreadRole::Vmm:
        return "vmm";
    case ThreadRole::Vcpu:
        return "vcpu";
    case ThreadRole::Api:
        return "api";
    case ThreadRole::ConfigBoot:
        return "config_boot";
    }
    return "unknown";
}

inline std::optional<ThreadRole> thread_role_from_name(std::string_view name) {
    for (ThreadRole role : ALL_THREAD_ROLES) {
        if (thread_role_name(role) == name)
            return role;
    }
    return std::nullopt;
}

} // namespace kvmm

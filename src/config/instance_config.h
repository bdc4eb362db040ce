// The parts of a Firecracker microVM configuration that are not devices: machine options
// VmConfig has no place for, the logger and metrics sinks, and what InstanceStart hands to
// the VMM. Plain values shared by the API, the --config-file loader and kvmmd.
#pragma once

#include "config/vm_config.h"

#include <optional>
#include <string>

namespace kvmm {

// Firecracker's MachineConfiguration fields that VmConfig has no place for.
struct MachineOptions {
    enum class HugePages { None, Transparent, Hugetlbfs2M };

    bool smt { false };
    bool track_dirty_pages { false };
    HugePages huge_pages { HugePages::None };

    bool operator==(MachineOptions const&) const = default;
};

// Firecracker's Logger body. Level names are Firecracker's (Error, Warning, Info, Debug, Trace, Off).
struct LoggerConfig {
    std::optional<std::string> log_path; // absent: keep logging to stderr
    std::string level { "Info" };
    bool show_level { false };
    bool show_log_origin { false };
    std::optional<std::string> module;

    bool operator==(LoggerConfig const&) const = default;
};

struct MetricsConfig {
    std::string metrics_path;

    bool operator==(MetricsConfig const&) const = default;
};

// Everything InstanceStart hands to the controller.
struct InstanceConfig {
    VmConfig vm;
    MachineOptions machine;
};

} // namespace kvmm

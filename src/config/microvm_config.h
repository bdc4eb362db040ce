// MicrovmConfig: the pre-boot configuration assembled from API requests or read from a
// Firecracker --config-file, in kvmm's types, plus the operations that keep it consistent
// (one root drive; ids, TAP names and MACs unique) and its Firecracker JSON form
// (GET /vm/config, swagger FullVmConfiguration).
//
// Threading: a plain value; the API server's thread owns the API's copy.
#pragma once

#include "base/expected.h"
#include "config/instance_config.h"
#include "config/resource_parsers.h"

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>

namespace kvmm {

struct MicrovmConfig {
    InstanceConfig instance;
    std::optional<LoggerConfig> logger;
    std::optional<MetricsConfig> metrics;
    // Each drive's cache_type as sent, echoed by GET /vm/config (kvmm runs both values alike).
    std::map<std::string, std::string> drive_cache_types;
};

// Adds the drive, or replaces the one with the same id. At most one drive is the root device.
// Ids are unique per device kind only: a drive and a network interface may share one, as in
// Firecracker (firectl names its root drive "1", the Go SDK numbers interfaces from "1").
Expected<void> put_drive(MicrovmConfig& config, DiskConfig drive, std::string cache_type = "Unsafe");
// Adds the interface, or replaces the one with the same id; TAP names and MACs stay unique.
Expected<void> put_network_interface(MicrovmConfig& config, NetConfig net);

nlohmann::json microvm_config_to_json(MicrovmConfig const& config);

// Parses Firecracker's --config-file document: an object with "boot-source" (required),
// "machine-config", "drives" [...], "network-interfaces" [...], "vsock", "entropy", "balloon",
// "logger" and "metrics", each in the API's body format. Errors name the section.
Expected<MicrovmConfig> load_config_file(std::string const& json_text);
// As above in the given dialect (config/resource_parsers.h): ConfigDialect::Kvmm reads the
// machine files that machine_config_file() writes.
Expected<MicrovmConfig> load_config_file(std::string const& json_text, ConfigDialect dialect);

// The whole machine as a --config-file document in ConfigDialect::Kvmm, which kvmmd hands to
// kvmm: load_config_file(text, Kvmm).instance.vm equals `vm` in every field the document holds
// (all but the console, which stays a flag, and inherited TAP fds, which a file cannot carry).
nlohmann::json machine_config_file(VmConfig const& vm);

} // namespace kvmm

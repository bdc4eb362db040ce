// Parsers from the JSON bodies of Firecracker's API resources (swagger definitions
// MachineConfiguration, BootSource, Drive, PartialDrive, NetworkInterface,
// PartialNetworkInterface, Vsock, EntropyDevice, Balloon, BalloonUpdate, BalloonStatsUpdate,
// Logger, Metrics, InstanceActionInfo, Vm) into kvmm's configuration types, and the reverse
// mapping used by GET /vm/config, GET /machine-config and GET /balloon. The same parsers serve
// the API and the --config-file loader, so both accept exactly the same documents.
//
// Threading: pure functions.
#pragma once

#include "base/expected.h"
#include "config/instance_config.h"
#include "config/mac_address.h"
#include "config/vm_config.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace kvmm {

// The kernel command line when PUT /boot-source has no boot_args.
inline constexpr std::string_view DEFAULT_BOOT_ARGS =
    "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd";

// Firecracker's bound on vCPUs (MachineConfiguration.vcpu_count maximum).
inline constexpr uint32_t MAX_API_VCPUS = 32;

// Which documents the parsers accept. Firecracker: exactly Firecracker's (the API and a user's
// --config-file). Kvmm: the machine files kvmmd writes for `kvmm --control-sock --config-file`,
// Firecracker's format widened to what kvmm's own configurations hold: ids of any characters but
// control characters and ',', up to UINT32_MAX vCPUs (validate() applies the host's limit), and
// the drive fields kvmm_cache ("writeback" or "writethrough") and kvmm_serial (load_config_file).
enum class ConfigDialect { Firecracker, Kvmm };

// Resource ids in paths and bodies: 1..64 characters, ASCII letters, digits and '_' (as Firecracker).
Expected<void> validate_resource_id(std::string_view id, std::string_view what);

Expected<RateLimitConfig> parse_rate_limiter(nlohmann::json const& body, std::string_view what);

// PUT replaces the whole machine configuration (absent optional fields take their defaults);
// PATCH (`partial`) changes only the fields present.
Expected<void> apply_machine_config(nlohmann::json const& body, bool partial, VmConfig& vm, MachineOptions& machine,
                                    ConfigDialect dialect = ConfigDialect::Firecracker);

Expected<void> apply_boot_source(nlohmann::json const& body, VmConfig& vm);

// `path_id`: the id from the URL, which drive_id must equal; empty for the config file.
Expected<DiskConfig> parse_drive(nlohmann::json const& body, std::string_view path_id,
                                 ConfigDialect dialect = ConfigDialect::Firecracker);
// The drive's cache_type as sent ("Unsafe" when absent), which GET /vm/config echoes: kvmm runs
// both the same way (docs/api.md), but a client comparing its request with the echo sees no change.
Expected<std::string> parse_drive_cache_type(nlohmann::json const& body);

struct DriveUpdate {
    std::string drive_id;
    std::optional<std::string> path;
    std::optional<RateLimitConfig> rate_limit;
};
Expected<DriveUpdate> parse_drive_update(nlohmann::json const& body, std::string_view path_id);

Expected<NetConfig> parse_network_interface(nlohmann::json const& body, std::string_view path_id,
                                            ConfigDialect dialect = ConfigDialect::Firecracker);

struct NetworkInterfaceUpdate {
    std::string iface_id;
    std::optional<RateLimitConfig> rx_rate_limit;
    std::optional<RateLimitConfig> tx_rate_limit;
};
Expected<NetworkInterfaceUpdate> parse_network_interface_update(nlohmann::json const& body, std::string_view path_id);

Expected<VsockConfig> parse_vsock(nlohmann::json const& body);
Expected<RngConfig> parse_entropy(nlohmann::json const& body);
Expected<BalloonConfig> parse_balloon(nlohmann::json const& body);
Expected<uint64_t> parse_balloon_update(nlohmann::json const& body);            // amount_mib
Expected<uint32_t> parse_balloon_statistics_update(nlohmann::json const& body); // stats_polling_interval_s
Expected<LoggerConfig> parse_logger(nlohmann::json const& body);
Expected<MetricsConfig> parse_metrics(nlohmann::json const& body);

enum class InstanceAction { InstanceStart, SendCtrlAltDel, FlushMetrics };
Expected<InstanceAction> parse_action(nlohmann::json const& body);
// PATCH /vm: true for "Paused", false for "Resumed".
Expected<bool> parse_vm_state_is_paused(nlohmann::json const& body);

nlohmann::json rate_limiter_to_json(RateLimitConfig const& limit);
nlohmann::json machine_config_to_json(VmConfig const& vm, MachineOptions const& machine);
nlohmann::json boot_source_to_json(VmConfig const& vm);
nlohmann::json drive_to_json(DiskConfig const& disk, std::string_view cache_type);
nlohmann::json network_interface_to_json(NetConfig const& net);
nlohmann::json vsock_to_json(VsockConfig const& vsock);
nlohmann::json entropy_to_json(RngConfig const& rng);
nlohmann::json balloon_to_json(BalloonConfig const& balloon);
nlohmann::json logger_to_json(LoggerConfig const& logger);
nlohmann::json metrics_to_json(MetricsConfig const& metrics);

} // namespace kvmm

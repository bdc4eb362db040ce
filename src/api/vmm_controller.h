// VmmController: what the Firecracker-compatible API asks of the running VMM. The API layer
// keeps the pre-boot configuration itself and hands it over once, on InstanceStart; every
// other method acts on the running (or paused) microVM.
//
// Threading: every method is called on the API server's thread, one call at a time. An
// implementation that must act on another thread (the main thread builds the Machine) posts
// the work there and waits for its result before returning, so that the HTTP answer reflects
// the outcome, as Firecracker's does.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"
#include "config/instance_config.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace kvmm {

enum class InstanceState { NotStarted, Running, Paused };

// The state's name as Firecracker's InstanceInfo and metrics spell it ("Not started", ...).
inline std::string_view instance_state_name(InstanceState state) {
    switch (state) {
    case InstanceState::NotStarted:
        return "Not started";
    case InstanceState::Running:
        return "Running";
    case InstanceState::Paused:
        return "Paused";
    }
    return "Not started";
}

struct InstanceInfo {
    std::string id;
    InstanceState state { InstanceState::NotStarted };
    std::string vmm_version;
    std::string app_name { "kvmm" };
};

// PUT /snapshot/load, parsed (File backend). The memory file of a Diff snapshot is the one its
// chain was applied to (kvmm snapshot-rebase).
struct SnapshotLoadRequest {
    std::string snapshot_path;
    std::string memory_file_path;
    bool resume_vm { false };
};

// PUT /snapshot/create's snapshot_type.
enum class SnapshotCreateType { Full, Diff };
// Turns the configuration a snapshot file carries (Firecracker's JSON configuration document)
// into the configuration to build, applying the request's overrides; the API supplies it.
using SnapshotConfigurator = std::function<Expected<InstanceConfig>(std::string const& config_json)>;

class VmmController {
public:
    virtual ~VmmController() = default;

    virtual InstanceState state() const = 0;

    // Builds and runs the microVM. Called at most once successfully.
    virtual Expected<void> start_instance(InstanceConfig const& config) = 0;
    virtual Expected<void> pause() = 0;
    virtual Expected<void> resume() = 0;
    virtual Expected<void> send_ctrl_alt_del() = 0;
    virtual Expected<void> flush_metrics() = 0;

    // Installs the log / metrics sink opened by the API (file in append mode, or FIFO). Pre-boot.
    virtual Expected<void> set_logger(LoggerConfig const& config, UniqueFd sink) = 0;
    virtual Expected<void> set_metrics(MetricsConfig const& config, UniqueFd sink) = 0;

    // Post-boot updates; an implementation may answer that it does not support one.
    virtual Expected<void> update_balloon(uint64_t target_mib) = 0;
    virtual Expected<void> update_balloon_statistics_interval(uint32_t interval_s) = 0;
    // Firecracker's BalloonStats object.
    virtual Expected<nlohmann::json> balloon_statistics() = 0;
    virtual Expected<void> update_drive(std::string const& drive_id, std::optional<std::string> const& path,
                                        std::optional<RateLimitConfig> const& rate_limit) = 0;
    virtual Expected<void> update_network_rate_limits(std::string const& iface_id,
                                                      std::optional<RateLimitConfig> const& rx,
                                                      std::optional<RateLimitConfig> const& tx) = 0;

    // PUT /snapshot/create: the paused microVM's state and configuration (`config_json`) to
    // snapshot_path, its memory to memory_file_path (Diff: the pages written since the last
    // snapshot; the API checked that dirty page tracking is on).
    virtual Expected<void> create_snapshot(std::string const& snapshot_path, std::string const& memory_file_path,
                                           std::string const& config_json, SnapshotCreateType type) = 0;
    // PUT /snapshot/load, in place of start_instance: reads the snapshot file, has `configure`
    // make the configuration from the one it carries, and builds the microVM from the
    // snapshot, left Paused or Running (resume_vm). Called at most once successfully.
    virtual Expected<void> load_snapshot(SnapshotLoadRequest const& request, SnapshotConfigurator const& configure) = 0;
};

} // namespace kvmm

// FakeVmmController: a VmmController for tests and fuzzers that records what the API asked
// for and can be told to fail. Threading: as VmmController (one calling thread).
#pragma once

#include "api/vmm_controller.h"

#include <string>
#include <vector>

namespace kvmm {

class FakeVmmController final : public VmmController {
public:
    InstanceState state() const override { return m_state; }

    Expected<void> start_instance(InstanceConfig const& config) override {
        calls.push_back("start_instance");
        if (fail_next)
            return take_failure();
        started_with = config;
        m_state = InstanceState::Running;
        return {};
    }
    Expected<void> pause() override { return record("pause", InstanceState::Paused); }
    Expected<void> resume() override { return record("resume", InstanceState::Running); }
    Expected<void> send_ctrl_alt_del() override { return record("send_ctrl_alt_del", m_state); }
    Expected<void> flush_metrics() override { return record("flush_metrics", m_state); }
    Expected<void> set_logger(LoggerConfig const& config, UniqueFd sink) override {
        logger = config;
        logger_sink_open = sink.is_valid();
        return record("set_logger", m_state);
    }
    Expected<void> set_metrics(MetricsConfig const&, UniqueFd sink) override {
        metrics_sink_open = sink.is_valid();
        return record("set_metrics", m_state);
    }
    Expected<void> update_balloon(uint64_t target_mib) override {
        balloon_target_mib = target_mib;
        return record("update_balloon", m_state);
    }
    Expected<void> update_balloon_statistics_interval(uint32_t interval_s) override {
        statistics_interval_s = interval_s;
        return record("update_balloon_statistics_interval", m_state);
    }
    Expected<nlohmann::json> balloon_statistics() override {
        TRY(record("balloon_statistics", m_state));
        return nlohmann::json { { "target_pages", balloon_target_mib * 256 }, { "actual_pages", 0 } };
    }
    Expected<void> update_drive(std::string const& id, std::optional<std::string> const&,
                                std::optional<RateLimitConfig> const& rate_limit) override {
        TRY(record("update_drive " + id, m_state));
        drive_rate_limit = rate_limit;
        return {};
    }
    Expected<void> update_network_rate_limits(std::string const& id, std::optional<RateLimitConfig> const&,
                                              std::optional<RateLimitConfig> const&) override {
        return record("update_network_rate_limits " + id, m_state);
    }

    Expected<void> create_snapshot(std::string const& snapshot_path, std::string const& memory_file_path,
                                   std::string const& config_json, SnapshotCreateType type) override {
        snapshot_type = type;
        snapshot_paths = { snapshot_path, memory_file_path };
        snapshot_config_json = config_json;
        return record("create_snapshot", m_state);
    }
    // Configures from `snapshot_config_json` as if the snapshot file had carried it.
    Expected<void> load_snapshot(SnapshotLoadRequest const& request, SnapshotConfigurator const& configure) override {
        calls.push_back("load_snapshot");
        if (fail_next)
            return take_failure();
        loaded = request;
        started_with = TRY(configure(snapshot_config_json));
        m_state = request.resume_vm ? InstanceState::Running : InstanceState::Paused;
        return {};
    }

    std::vector<std::string> calls;
    std::pair<std::string, std::string> snapshot_paths; // the last create_snapshot's
    std::string snapshot_config_json;
    SnapshotCreateType snapshot_type { SnapshotCreateType::Full };
    std::optional<SnapshotLoadRequest> loaded;
    std::optional<RateLimitConfig> drive_rate_limit; // as the last successful update_drive got it
    std::optional<InstanceConfig> started_with;
    std::optional<LoggerConfig> logger;
    bool logger_sink_open { false };
    bool metrics_sink_open { false };
    uint64_t balloon_target_mib { 0 };
    uint32_t statistics_interval_s { 0 };
    bool fail_next { false };

private:
    Expected<void> take_failure() {
        fail_next = false;
        return Error("controller refused");
    }
    Expected<void> record(std::string call, InstanceState next) {
        calls.push_back(std::move(call));
        if (fail_next)
            return take_failure();
        m_state = next;
        return {};
    }

    InstanceState m_state { InstanceState::NotStarted };
};

} // namespace kvmm

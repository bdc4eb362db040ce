// VmmControl: the real VmmController behind kvmm's Firecracker-compatible API.
//
// The API server's thread calls it; the machine is built and run on the main
// thread. start_instance() hands the configuration to the main thread (which
// waits in wait_for_start()), waits until the Machine is built, and returns
// the outcome, so the HTTP answer to InstanceStart says whether the VM really
// started. Later calls (pause, resume, Ctrl+Alt+Del) go to the Machine, which
// runs them on its event loop. Metrics go to the sink PUT /metrics opened, on
// FlushMetrics and every 60 seconds (Firecracker's period), from a timer on the
// API server's event loop (api_server_options() attaches it), so there is no
// metrics thread.
//
// PUT /snapshot/load goes the same way as InstanceStart, with the snapshot's machine state and
// memory file in the request, so the main thread builds a restored machine instead; snapshot
// creation runs on the API thread against the paused machine (Machine::write_snapshot).
//
// Threading: VmmController methods on the API thread (set_metrics also before the
// API server starts, as --metrics and --config-file do); wait_for_start(),
// machine_built() and machine_stopped() on the main thread; attach_to_loop() and
// detach_from_loop() where the API server calls them (its start() and stop()). The
// API server stops before the VmmControl is destroyed.
#pragma once

#include "api/api_server.h"
#include "api/vmm_controller.h"
#include "base/event_loop.h"
#include "base/loop_timer.h"
#include "base/thread_annotations.h"
#include "vmm/machine.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

namespace kvmm {

// What the main thread is asked to build: a machine that boots, or one restored.
struct StartRequest {
    VmConfig config;
    std::optional<RestoreSource> restore;
};

class VmmControl final : public VmmController {
public:
    static constexpr std::chrono::milliseconds DEFAULT_METRICS_PERIOD { 60'000 };

    explicit VmmControl(std::chrono::milliseconds metrics_period = DEFAULT_METRICS_PERIOD)
        : m_metrics_period(metrics_period) {}
    ~VmmControl() override;

    InstanceState state() const override { return m_state.load(); }
    Expected<void> start_instance(InstanceConfig const& config) override;
    Expected<void> pause() override;
    Expected<void> resume() override;
    Expected<void> send_ctrl_alt_del() override;
    Expected<void> flush_metrics() override;
    Expected<void> set_logger(LoggerConfig const& config, UniqueFd sink) override;
    Expected<void> set_metrics(MetricsConfig const& config, UniqueFd sink) override;
    Expected<void> update_balloon(uint64_t target_mib) override;
    Expected<void> update_balloon_statistics_interval(uint32_t interval_s) override;
    Expected<nlohmann::json> balloon_statistics() override;
    Expected<void> update_drive(std::string const& drive_id, std::optional<std::string> const& path,
                                std::optional<RateLimitConfig> const& rate_limit) override;
    Expected<void> update_network_rate_limits(std::string const& iface_id, std::optional<RateLimitConfig> const& rx,
                                              std::optional<RateLimitConfig> const& tx) override;
    Expected<void> create_snapshot(std::string const& snapshot_path, std::string const& memory_file_path,
                                   std::string const& config_json, SnapshotCreateType type) override;
    Expected<void> load_snapshot(SnapshotLoadRequest const& request, SnapshotConfigurator const& configure) override;

    // Main thread: waits for InstanceStart or a snapshot load, or until should_stop() (asked
    // every 100 ms) says true.
    std::optional<StartRequest> wait_for_start(std::function<bool()> const& should_stop);
    // Main thread: reports the build's outcome to the waiting API call; on success the machine
    // is then controllable until machine_stopped().
    void machine_built(Expected<std::unique_ptr<Machine>>& machine);
    void machine_stopped();

    // Counted by the API front end for the metrics.
    void count_request(std::string_view method);

    // `options` for the API server that serves this controller, with the hooks that attach the
    // periodic metrics to its event loop.
    ApiServerOptions api_server_options(ApiServerOptions options = {});
    // The API server's loop, on which the periodic metrics run once metrics are configured
    // (at once if they are already); detach_from_loop() takes them off it again.
    Expected<void> attach_to_loop(EventLoop& loop);
    void detach_from_loop();

private:
    // Runs `use` with the running machine while holding m_machine_lock, so the main thread
    // cannot destroy the machine meanwhile (machine_stopped() takes the same lock).
    Expected<void> with_machine(std::function<Expected<void>(Machine&)> const& use);
    void write_metrics_line();
    // With m_lock held: starts the periodic metrics on m_api_loop.
    Expected<void> start_metrics_timer();
    // Hands `request` to the main thread and waits for the build's outcome.
    Expected<void> request_start(StartRequest request);

    std::atomic<InstanceState> m_state { InstanceState::NotStarted };

    Mutex m_lock; // guards everything below
    std::condition_variable m_changed;
    std::optional<StartRequest> m_start_request GUARDED_BY(m_lock);
    std::optional<Expected<void>> m_start_result GUARDED_BY(m_lock);
    Mutex m_machine_lock; // guards m_machine; never taken while holding m_lock
    Machine* m_machine GUARDED_BY(m_machine_lock) { nullptr };
    UniqueFd m_metrics_sink GUARDED_BY(m_lock);
    uint64_t m_metrics_flushes GUARDED_BY(m_lock) { 0 };
    uint64_t m_get_requests GUARDED_BY(m_lock) { 0 };
    uint64_t m_put_requests GUARDED_BY(m_lock) { 0 };
    uint64_t m_patch_requests GUARDED_BY(m_lock) { 0 };
    uint64_t m_other_requests GUARDED_BY(m_lock) { 0 };
    bool m_stopping GUARDED_BY(m_lock) { false };
    std::chrono::milliseconds const m_metrics_period;
    EventLoop* m_api_loop { nullptr };
    // Lives on m_api_loop: created there by attach_to_loop() or set_metrics(), and ended by
    // detach_from_loop() once the loop has stopped.
    std::optional<LoopTimer> m_metrics_timer;
};

} // namespace kvmm

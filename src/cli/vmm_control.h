// VmmControl: the real VmmController behind kvmm's Firecracker-compatible API.
//
// The API server's thread calls it; the machine is built and run on the main
// thread. start_instance() hands the configuration to the main thread (which
// waits in wait_for_start()), waits until the Machine is built, and returns
// the outcome, so the HTTP answer to InstanceStart says whether the VM really
// started. Later calls (pause, resume, Ctrl+Alt+Del) go to the Machine, which
// runs them on its event loop. Metrics go to the sink PUT /metrics opened, on
// FlushMetrics and every 60 seconds (Firecracker's period).
//
// Threading: VmmController methods on the API thread; wait_for_start(),
// machine_built() and machine_stopped() on the main thread.
#pragma once

#include "api/vmm_controller.h"
#include "base/thread_annotations.h"
#include "vmm/machine.h"

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

namespace kvmm {

class VmmControl final : public VmmController {
public:
    VmmControl() = default;
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

    // Main thread: waits for InstanceStart, or until should_stop() (asked every 100 ms) says true.
    std::optional<VmConfig> wait_for_start(std::function<bool()> const& should_stop);
    // Main thread: reports the build's outcome to the waiting API call; on success the machine
    // is then controllable until machine_stopped().
    void machine_built(Expected<std::unique_ptr<Machine>>& machine);
    void machine_stopped();

    // Counted by the API front end for the metrics.
    void count_request(std::string_view method);

private:
    // Runs `use` with the running machine while holding m_machine_lock, so the main thread
    // cannot destroy the machine meanwhile (machine_stopped() takes the same lock).
    Expected<void> with_machine(std::function<Expected<void>(Machine&)> const& use);
    void write_metrics_line();
    void periodic_metrics();

    std::atomic<InstanceState> m_state { InstanceState::NotStarted };

    Mutex m_lock; // guards everything below
    std::condition_variable m_changed;
    std::optional<VmConfig> m_start_request GUARDED_BY(m_lock);
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
    std::thread m_metrics_thread;
};

} // namespace kvmm

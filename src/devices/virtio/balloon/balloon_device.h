// BalloonDevice: the virtio memory balloon (virtio 1.2 section 5.5). The host
// sets a target size; the guest driver gives that many 4 KiB pages back on the
// inflate queue, whose host memory is released at once (page_release.h), and
// takes pages back on the deflate queue, which needs nothing from the host: a
// released page faults back in zeroed.
//
// Features offered (5.5.3):
//   - STATS_VQ always: a driver that negotiates it posts one stats buffer which
//     the device holds until the polling timer fires, so polling can be turned
//     on or off at run time (set_stats_interval) without renegotiation; with the
//     interval at zero the held buffer costs nothing;
//   - DEFLATE_ON_OOM and REPORTING (free page reporting) when configured;
//   - RING_EVENT_IDX and RING_INDIRECT_DESC. Neither FREE_PAGE_HINT, PAGE_POISON
//     nor MUST_TELL_HOST: the device has no use for them.
// Queue indexes depend on the negotiated features (5.5.2): inflateq 0, deflateq 1,
// then statsq if STATS_VQ, then reporting_vq if REPORTING. The transport needs a
// fixed list, so four queues are offered and mapped to their roles at activation.
//
// Guest input is bounded: an inflate or deflate buffer is read up to
// MAX_PFNS_PER_BUFFER entries, a stats buffer up to BalloonStatistics::MAX_ENTRIES;
// PFNs outside guest RAM and misaligned reported ranges are skipped with a
// rate-limited log line. Ring-level violations put the device in NEEDS_RESET.
//
// Threading: see VirtioDevice. In addition set_target_mib(), target_mib(),
// actual_mib(), statistics(), set_stats_interval() and the counters may be called
// from any thread: the configuration and statistics are guarded by m_lock, the
// counters are atomics, and the config-change interrupt is raised from the event
// loop (set_target_mib() wakes it through an eventfd). The device must be
// destroyed on the event loop's thread (it unregisters its fds there).
#pragma once

#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/rate_limited_log.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "devices/virtio/balloon/balloon_statistics.h"
#include "devices/virtio/balloon/page_release.h"
#include "devices/virtio/device_state.h"
#include "devices/virtio/virtio_device_base.h"

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace kvmm::virtio {

// Feature bits (5.5.3).
inline constexpr unsigned BALLOON_F_MUST_TELL_HOST = 0;
inline constexpr unsigned BALLOON_F_STATS_VQ = 1;
inline constexpr unsigned BALLOON_F_DEFLATE_ON_OOM = 2;
inline constexpr unsigned BALLOON_F_FREE_PAGE_HINT = 3;
inline constexpr unsigned BALLOON_F_PAGE_POISON = 4;
inline constexpr unsigned BALLOON_F_REPORTING = 5;

struct BalloonOptions {
    uint64_t target_mib { 0 };
    bool deflate_on_oom { false };
    bool free_page_reporting { false };
    // How often the driver is asked for fresh statistics; zero: never.
    std::chrono::milliseconds stats_interval { 0 };
};

// The balloon's saved state (docs/ARCHITECTURE.md "Saved state"):
//   - offered_features: a fingerprint of the configuration (deflate-on-OOM, reporting);
//   - target_pages, actual_pages, config_generation: the configuration space as the guest
//     sees it (the target may have been changed at run time, so the saved one wins);
//   - stats_interval_ms: the polling interval, also changeable at run time;
//   - statistics: the latest values the driver reported (what GET /balloon/statistics shows);
//   - active: negotiated features and each queue's progress, and the stats buffer the device
//     holds until the next poll (held_stats_head, one of the stats queue's held heads).
// Deliberately not saved: which pages were released (the guest's memory, saved with it, says
// which pages are zero; the host keeps no list), the counters (metrics of this process).
struct BalloonState {
    static constexpr std::string_view SECTION = "virtio-balloon";
    static constexpr uint32_t VERSION = 1;
    // Longer intervals than this (about 35 years) are refused: they cannot have been set on purpose.
    static constexpr uint64_t MAX_STATS_INTERVAL_MS = uint64_t { 1 } << 40;

    uint64_t offered_features { 0 };
    uint32_t target_pages { 0 };
    uint32_t actual_pages { 0 };
    uint32_t config_generation { 0 };
    uint64_t stats_interval_ms { 0 };
    BalloonStatistics statistics;
    std::optional<ActiveDeviceState> active;
    std::optional<uint16_t> held_stats_head;

    bool operator==(BalloonState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<BalloonState> decode(StateReader& reader);
};

class BalloonDevice final : public VirtioDeviceBase {
public:
    static constexpr uint16_t QUEUE_SIZE = 256;
    // Linux sends at most 256 PFNs per buffer (VIRTIO_BALLOON_ARRAY_PFNS_MAX); more than this
    // is ignored so that one buffer cannot keep the event loop busy.
    static constexpr uint32_t MAX_PFNS_PER_BUFFER = 4096;
    // Bytes of PFN arrays and reported ranges handled per event-loop turn (work_budget.h).
    static constexpr uint64_t MAX_BYTES_PER_WAKEUP = 256ull << 20;
    // Configuration space (5.5.4): num_pages, actual, free_page_hint_cmd_id, poison_val.
    static constexpr uint64_t CONFIG_NUM_PAGES = 0;
    static constexpr uint64_t CONFIG_ACTUAL = 4;
    static constexpr uint64_t CONFIG_SIZE = 16;
    static constexpr uint64_t PAGES_PER_MIB = (1 << 20) / BALLOON_PAGE_SIZE;

    static Expected<std::unique_ptr<BalloonDevice>> create(EventLoop& event_loop, BalloonOptions const& options);
    ~BalloonDevice() override;
    BalloonDevice(BalloonDevice const&) = delete;
    BalloonDevice& operator=(BalloonDevice const&) = delete;

    DeviceType type() const override { return DeviceType::Balloon; }
    uint64_t features() const override;
    std::span<uint16_t const> queue_max_sizes() const override { return m_queue_sizes; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<uint8_t const> data) override;
    uint32_t config_generation() const override;
    Expected<void> activate(ActivationContext context) override;
    void process_queue(size_t index) override;
    void reset() override;

    // Owner API (any thread). The target is stored as num_pages; it must fit in le32 pages.
    Expected<void> set_target_mib(uint64_t mib);
    uint64_t target_mib() const;
    // What the driver says the balloon holds (`actual`), rounded down to whole MiB.
    uint64_t actual_mib() const;
    uint32_t actual_pages() const;
    BalloonStatistics statistics() const;
    Expected<void> set_stats_interval(std::chrono::milliseconds interval);
    std::chrono::milliseconds stats_interval() const;

    // Saved state (balloon_device_state.cc), event-loop thread. restore() puts a device that is
    // not active back where the saved one was; `context` is present exactly when the saved
    // device was active, and a refusal changes nothing. The restored device asks for a turn of
    // each queue it serves (ActivationContext::reschedule) and otherwise waits for the driver.
    BalloonState save() const;
    Expected<void> restore(BalloonState const& state, std::optional<ActivationContext> context);
    Expected<void> save_state(StateWriter& writer) const override;
    Expected<void> restore_state(StateReader& reader, std::optional<ActivationContext> context) override;

    // Counters for the metrics layer (any thread).
    uint64_t inflated_pages() const { return m_inflated_pages.load(std::memory_order_relaxed); }
    uint64_t deflated_pages() const { return m_deflated_pages.load(std::memory_order_relaxed); }
    uint64_t reported_bytes() const { return m_reported_bytes.load(std::memory_order_relaxed); }
    uint64_t stats_updates() const { return m_stats_updates.load(std::memory_order_relaxed); }
    uint64_t stats_requests() const { return m_stats_requests.load(std::memory_order_relaxed); }
    // PFNs, reported ranges and buffers the device ignored because they were malformed.
    uint64_t rejected_pages() const { return m_rejected_pages.load(std::memory_order_relaxed); }
    uint64_t malformed_buffers() const { return m_malformed_buffers.load(std::memory_order_relaxed); }
    uint64_t release_failures() const { return m_release_failures.load(std::memory_order_relaxed); }
    std::vector<Counter> counters() const override {
        return { { "actual_mib", actual_mib() },
                 { "target_mib", target_mib() },
                 { "inflated_pages", inflated_pages() },
                 { "deflated_pages", deflated_pages() },
                 { "reported_bytes", reported_bytes() },
                 { "stats_updates", stats_updates() },
                 { "rejected_pages", rejected_pages() },
                 { "malformed_buffers", malformed_buffers() },
                 { "release_failures", release_failures() },
                 { "budget_yields", budget_yields() } };
    }

private:
    enum class Role { None, Inflate, Deflate, Stats, Reporting };
    static constexpr size_t QUEUE_COUNT = 4;
    struct QueueRoles {
        std::array<Role, QUEUE_COUNT> roles {};
        std::optional<size_t> stats_queue;
    };
    // Which queue does what under the context's features (5.5.2); checks only, changes nothing.
    Expected<QueueRoles> assign_roles(ActivationContext const& context);

    BalloonDevice(EventLoop& event_loop, BalloonOptions const& options, EventFd config_changed, UniqueFd timer);

    // Event-loop thread.
    Expected<void> drain(size_t index);
    Expected<void> inflate_or_deflate(Role role, DescriptorChain const& chain);
    Expected<void> report_free_pages(DescriptorChain const& chain);
    Expected<void> receive_statistics(DescriptorChain const& chain);
    Expected<void> request_statistics();
    void on_config_changed();
    void on_timer();
    void on_failed() override;
    // guest_error() is called from any thread (write_config on vCPU threads): the name is constant.
    std::string log_name() const override { return "virtio balloon"; }

    EventLoop& m_event_loop;
    EventFd m_config_changed;
    UniqueFd m_timer;
    bool m_deflate_on_oom;
    bool m_free_page_reporting;
    std::array<uint16_t, QUEUE_COUNT> m_queue_sizes { QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE };

    mutable Mutex m_lock; // guards the configuration space, the statistics and their interval
    uint32_t m_num_pages GUARDED_BY(m_lock) { 0 };
    uint32_t m_actual_pages GUARDED_BY(m_lock) { 0 };
    uint32_t m_generation GUARDED_BY(m_lock) { 0 };
    BalloonStatistics m_statistics GUARDED_BY(m_lock);
    std::chrono::milliseconds m_stats_interval GUARDED_BY(m_lock) { 0 };

    // Event-loop thread only.
    std::array<Role, QUEUE_COUNT> m_roles {};
    std::optional<size_t> m_stats_queue;
    std::optional<uint16_t> m_held_stats_head; // the driver's stats buffer, kept until polled
    DescriptorChain m_chain;
    std::vector<std::byte> m_scratch;
    std::vector<uint32_t> m_pfns;
    std::vector<PageRun> m_runs;
    std::vector<iovec> m_pieces;

    std::atomic<uint64_t> m_inflated_pages { 0 };
    std::atomic<uint64_t> m_deflated_pages { 0 };
    std::atomic<uint64_t> m_reported_bytes { 0 };
    std::atomic<uint64_t> m_stats_updates { 0 };
    std::atomic<uint64_t> m_stats_requests { 0 };
    std::atomic<uint64_t> m_rejected_pages { 0 };
    std::atomic<uint64_t> m_malformed_buffers { 0 };
    std::atomic<uint64_t> m_release_failures { 0 };
};

} // namespace kvmm::virtio

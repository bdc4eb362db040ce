#include "cli/vmm_control.h"

#include "vmm/snapshot_file.h"

#include <nlohmann/json.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <mutex>
#include <unistd.h>
#include <vector>

namespace kvmm {

namespace {

// A spdlog sink writing to the fd the API opened for PUT /logger (a file in append mode or
// a FIFO). Firecracker's logger writes one line per event; so does this.
class FdSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit FdSink(UniqueFd fd) : m_fd(std::move(fd)) {}

protected:
    void sink_it_(spdlog::details::log_msg const& message) override {
        spdlog::memory_buf_t formatted;
        formatter_->format(message, formatted);
        size_t done = 0;
        while (done < formatted.size()) {
            ssize_t const written = ::write(m_fd.get(), formatted.data() + done, formatted.size() - done);
            if (written <= 0)
                return; // a full FIFO or a vanished reader must not stop the VMM
            done += static_cast<size_t>(written);
        }
    }
    void flush_() override {}

private:
    UniqueFd m_fd;
};

Expected<spdlog::level::level_enum> firecracker_level(std::string const& level) {
    if (level == "Error")
        return spdlog::level::err;
    if (level == "Warning" || level == "Warn")
        return spdlog::level::warn;
    if (level == "Info")
        return spdlog::level::info;
    if (level == "Debug")
        return spdlog::level::debug;
    if (level == "Trace")
        return spdlog::level::trace;
    if (level == "Off")
        return spdlog::level::off;
    return Error::format("unknown log level '{}'", level);
}

} // namespace

VmmControl::~VmmControl() {
    {
        MutexLock guard(m_lock);
        m_stopping = true;
    }
    m_changed.notify_all();
}

namespace {

// The machine an InstanceConfig describes, or why kvmm cannot build it.
Expected<VmConfig> machine_config(InstanceConfig const& config) {
    if (config.machine.huge_pages == MachineOptions::HugePages::Hugetlbfs2M)
        return Error("huge_pages \"2M\" (hugetlbfs) is not supported by kvmm; it backs RAM with transparent huge "
                     "pages when --huge-pages is given");
    VmConfig vm = config.vm;
    vm.track_dirty_pages = config.machine.track_dirty_pages;
    vm.threads_per_core = config.machine.smt ? 2 : 1;
    if (config.machine.huge_pages == MachineOptions::HugePages::Transparent)
        vm.transparent_huge_pages = true;
    return vm;
}

} // namespace

Expected<void> VmmControl::start_instance(InstanceConfig const& config) {
    return request_start(StartRequest { TRY(machine_config(config)), std::nullopt });
}

Expected<void> VmmControl::load_snapshot(SnapshotLoadRequest const& request, SnapshotConfigurator const& configure) {
    auto file = TRY(SnapshotFile::read(request.snapshot_path));
    auto const instance = TRY(configure(file.config_json));
    auto vm = TRY(machine_config(instance).with_context("the snapshot's configuration"));
    RestoreSource source { std::move(file.machine_state), std::move(file.memory_layout), request.memory_file_path,
                           !request.resume_vm };
    auto const started = std::chrono::steady_clock::now();
    TRY(request_start(StartRequest { std::move(vm), std::move(source) }));
    spdlog::info(
        "snapshot {} loaded in {} us ({})", request.snapshot_path,
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count(),
        request.resume_vm ? "running" : "paused");
    return {};
}

Expected<void> VmmControl::create_snapshot(std::string const& snapshot_path, std::string const& memory_file_path,
                                           std::string const& config_json, SnapshotCreateType type) {
    return with_machine([&](Machine& machine) -> Expected<void> {
        auto const report =
            TRY(machine.write_snapshot(snapshot_path, memory_file_path, config_json,
                                       type == SnapshotCreateType::Diff ? SnapshotType::Diff : SnapshotType::Full));
        spdlog::info("{} snapshot {} ({} bytes of state, {} us) and memory {} ({} of {} bytes with data, {} us)",
                     type == SnapshotCreateType::Diff ? "Diff" : "Full", snapshot_path, report.state_bytes,
                     report.state_time.count(), memory_file_path, report.memory_bytes_written, report.memory_bytes,
                     report.memory_time.count());
        return {};
    });
}

Expected<void> VmmControl::request_start(StartRequest request) {
    {
        MutexLock machine_guard(m_machine_lock);
        if (m_machine)
            return Error("the microVM is already running");
    }
    MutexLock guard(m_lock);
    if (m_start_request)
        return Error("the microVM is already starting");
    m_start_result.reset();
    m_start_request = std::move(request);
    m_changed.notify_all();
    guard.wait(m_changed, [this]() REQUIRES(m_lock) { return m_start_result.has_value() || m_stopping; });
    if (!m_start_result)
        return Error("kvmm is shutting down");
    auto result = std::move(*m_start_result);
    m_start_result.reset();
    return result;
}

std::optional<StartRequest> VmmControl::wait_for_start(std::function<bool()> const& should_stop) {
    MutexLock guard(m_lock);
    while (!m_start_request) {
        guard.unlock();
        if (should_stop())
            return std::nullopt;
        guard.lock();
        guard.wait_for(m_changed, std::chrono::milliseconds(100));
    }
    // The restore source's state is moved out, once: the request stays until machine_built().
    StartRequest request { m_start_request->config, std::nullopt };
    if (m_start_request->restore)
        request.restore = std::move(m_start_request->restore);
    return request;
}

void VmmControl::machine_built(Expected<std::unique_ptr<Machine>>& machine) {
    if (machine) {
        MutexLock machine_guard(m_machine_lock);
        m_machine = machine->get();
    }
    {
        MutexLock guard(m_lock);
        m_start_request.reset();
        if (machine) {
            m_state = (*machine)->paused() ? InstanceState::Paused : InstanceState::Running;
            m_start_result = Expected<void> {};
        } else {
            m_start_result = Expected<void>(machine.error());
        }
    }
    m_changed.notify_all();
}

// Called after Machine::run() returned: its loop has answered every posted call, so a caller
// holding m_machine_lock finishes promptly and the machine can then be destroyed.
void VmmControl::machine_stopped() {
    MutexLock machine_guard(m_machine_lock);
    m_machine = nullptr;
}

Expected<void> VmmControl::with_machine(std::function<Expected<void>(Machine&)> const& use) {
    MutexLock machine_guard(m_machine_lock);
    if (!m_machine)
        return Error("the microVM is not running");
    return use(*m_machine);
}

Expected<void> VmmControl::pause() {
    TRY(with_machine([](Machine& machine) { return machine.pause(); }));
    m_state = InstanceState::Paused;
    return {};
}

Expected<void> VmmControl::resume() {
    TRY(with_machine([](Machine& machine) { return machine.resume(); }));
    m_state = InstanceState::Running;
    return {};
}

Expected<void> VmmControl::send_ctrl_alt_del() {
    return with_machine([](Machine& machine) { return machine.send_ctrl_alt_del(); });
}

// Without a sink (PUT /logger with no log_path) only the level changes and logs stay on stderr.
// With one, the default logger is replaced by one that writes only there: once Firecracker's
// logger has a path, nothing goes to stderr any more (logger/logging.rs).
//
// Threading: called before the microVM starts (the API refuses PUT /logger afterwards), when
// the only other threads are the main thread waiting for InstanceStart and the metrics writer,
// neither of which logs. Replaced loggers are kept alive for the process's lifetime all the
// same, so a log call that fetched the old default logger just before the swap stays valid.
Expected<void> VmmControl::set_logger(LoggerConfig const& config, UniqueFd sink) {
    auto const level = TRY(firecracker_level(config.level));
    if (!sink.is_valid()) {
        spdlog::default_logger()->set_level(level);
        return {};
    }
    auto file_sink = std::make_shared<FdSink>(std::move(sink));
    // Firecracker's line: timestamp [instance:thread:level:origin] message; kvmm keeps its own
    // pattern and adds the level and origin when asked.
    std::string pattern = "%Y-%m-%dT%H:%M:%S.%f";
    if (config.show_level)
        pattern += " [%l]";
    if (config.show_log_origin)
        pattern += " [%s:%#]";
    pattern += " %v";
    file_sink->set_pattern(pattern);
    auto logger = std::make_shared<spdlog::logger>("kvmm", std::move(file_sink));
    logger->set_level(level);
    static std::mutex retired_lock;
    static std::vector<std::shared_ptr<spdlog::logger>> retired;
    {
        std::lock_guard guard(retired_lock);
        retired.push_back(spdlog::default_logger());
    }
    spdlog::set_default_logger(std::move(logger));
    spdlog::info("logging to {} at level {}", config.log_path.value_or("the given sink"), config.level);
    return {};
}

Expected<void> VmmControl::set_metrics(MetricsConfig const&, UniqueFd sink) {
    MutexLock guard(m_lock);
    if (m_metrics_sink.is_valid())
        return Error("metrics are already configured");
    m_metrics_sink = std::move(sink);
    if (m_api_loop) {
        if (auto started = start_metrics_timer(); !started) {
            m_metrics_sink.reset();
            return started.error();
        }
    }
    return {};
}

ApiServerOptions VmmControl::api_server_options(ApiServerOptions options) {
    options.attach_to_loop = [this](EventLoop& loop) { return attach_to_loop(loop); };
    options.detach_from_loop = [this] { detach_from_loop(); };
    return options;
}

Expected<void> VmmControl::attach_to_loop(EventLoop& loop) {
    MutexLock guard(m_lock);
    if (m_api_loop)
        return Error("the periodic metrics are already attached to an API server");
    m_api_loop = &loop;
    if (m_metrics_sink.is_valid()) {
        if (auto started = start_metrics_timer(); !started) {
            m_api_loop = nullptr;
            return started.error().with_context("periodic metrics");
        }
    }
    return {};
}

void VmmControl::detach_from_loop() {
    std::lock_guard guard(m_lock);
    m_metrics_timer.reset();
    m_api_loop = nullptr;
}

// The first line comes one period after the metrics were configured, as Firecracker's do; each
// runs on the API thread like FlushMetrics, between requests.
Expected<void> VmmControl::start_metrics_timer() {
    auto timer = TRY(LoopTimer::create(*m_api_loop, [this] { write_metrics_line(); }));
    TRY(timer.arm_periodic(m_metrics_period));
    m_metrics_timer = std::move(timer);
    return {};
}

Expected<void> VmmControl::flush_metrics() {
    {
        MutexLock guard(m_lock);
        if (!m_metrics_sink.is_valid())
            return Error("metrics are not configured: PUT /metrics first");
    }
    write_metrics_line();
    return {};
}

void VmmControl::count_request(std::string_view method) {
    MutexLock guard(m_lock);
    if (method == "GET")
        ++m_get_requests;
    else if (method == "PUT")
        ++m_put_requests;
    else if (method == "PATCH")
        ++m_patch_requests;
    else
        ++m_other_requests;
}

// One JSON object per line, in the spirit of Firecracker's metrics: counters since start.
void VmmControl::write_metrics_line() {
    nlohmann::json line;
    auto const now = std::chrono::system_clock::now().time_since_epoch();
    line["utc_timestamp_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(now).count();
    line["vmm"] = { { "state", instance_state_name(m_state.load()) } };
    {
        MutexLock guard(m_lock);
        line["api_server"] = { { "get_requests", m_get_requests },
                               { "put_requests", m_put_requests },
                               { "patch_requests", m_patch_requests },
                               { "other_requests", m_other_requests } };
        line["metrics"] = { { "flushes", ++m_metrics_flushes } };
    }
    (void)with_machine([&](Machine& machine) -> Expected<void> {
        auto metrics = machine.metrics();
        if (metrics) {
            auto vcpus = nlohmann::json::array();
            for (auto const& counts : metrics->vcpus)
                vcpus.push_back({ { "exit_io", counts.io },
                                  { "exit_mmio", counts.mmio },
                                  { "exit_halt", counts.halt },
                                  { "exit_other", counts.other } });
            line["vcpu"] = std::move(vcpus);
            for (auto const& device : metrics->devices) {
                nlohmann::json counters = nlohmann::json::object();
                for (auto const& [name, value] : device.counters)
                    counters[name] = value;
                line["devices"][device.name] = std::move(counters);
            }
        }
        return {};
    });
    auto text = line.dump() + "\n";
    MutexLock guard(m_lock);
    if (m_metrics_sink.is_valid())
        (void)!::write(m_metrics_sink.get(), text.data(), text.size());
}

Expected<void> VmmControl::update_balloon(uint64_t target_mib) {
    return with_machine([&](Machine& machine) { return machine.set_balloon_target(target_mib); });
}

Expected<void> VmmControl::update_balloon_statistics_interval(uint32_t interval_s) {
    return with_machine(
        [&](Machine& machine) { return machine.set_balloon_statistics_interval(std::chrono::seconds(interval_s)); });
}

// Firecracker's BalloonStats: target and actual size, and the guest's statistics it has sent.
Expected<nlohmann::json> VmmControl::balloon_statistics() {
    nlohmann::json stats;
    auto const gathered = with_machine([&](Machine& machine) -> Expected<void> {
        auto const report = TRY(machine.balloon_report());
        // Before the guest's first report Firecracker answers 200 with the sizes only (its
        // BalloonStats has every guest statistic optional); so does kvmm.
        auto const& statistics = report.statistics;
        stats["target_mib"] = report.target_mib;
        stats["target_pages"] = report.target_mib * 256;
        stats["actual_mib"] = report.actual_mib;
        stats["actual_pages"] = report.actual_pages;
        using virtio::StatTag;
        std::pair<char const*, StatTag> const fields[] = {
            { "swap_in", StatTag::SwapIn },
            { "swap_out", StatTag::SwapOut },
            { "major_faults", StatTag::MajorFaults },
            { "minor_faults", StatTag::MinorFaults },
            { "free_memory", StatTag::MemoryFree },
            { "total_memory", StatTag::MemoryTotal },
            { "available_memory", StatTag::MemoryAvailable },
            { "disk_caches", StatTag::DiskCaches },
            { "hugetlb_allocations", StatTag::HugetlbAllocations },
            { "hugetlb_failures", StatTag::HugetlbFailures },
        };
        for (auto const& [name, tag] : fields) {
            if (auto value = statistics.get(tag))
                stats[name] = *value;
        }
        return {};
    });
    if (!gathered)
        return gathered.error();
    return stats;
}

Expected<void> VmmControl::update_drive(std::string const& drive_id, std::optional<std::string> const& path,
                                        std::optional<RateLimitConfig> const& rate_limit) {
    return with_machine([&](Machine& machine) -> Expected<void> {
        // The new limits are checked first, so that a bad one leaves the drive where it was.
        if (rate_limit)
            TRY(RateLimiter::validate(*rate_limit).with_context(fmt::format("drive '{}' rate_limiter", drive_id)));
        if (path)
            TRY(machine.replace_disk_image(drive_id, *path));
        if (rate_limit)
            TRY(machine.update_disk_rate_limit(drive_id, *rate_limit));
        return {};
    });
}

Expected<void> VmmControl::update_network_rate_limits(std::string const& iface_id,
                                                      std::optional<RateLimitConfig> const& rx,
                                                      std::optional<RateLimitConfig> const& tx) {
    if (!rx && !tx)
        return {};
    return with_machine([&](Machine& machine) { return machine.update_net_rate_limits(iface_id, rx, tx); });
}

} // namespace kvmm

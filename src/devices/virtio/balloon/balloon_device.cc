#include "devices/virtio/balloon/balloon_device.h"

#include "devices/virtio/config_space.h"
#include "devices/virtio/work_budget.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <sys/timerfd.h>
#include <unistd.h>

namespace kvmm::virtio {

Expected<std::unique_ptr<BalloonDevice>> BalloonDevice::create(EventLoop& event_loop, BalloonOptions const& options) {
    // PFNs are in 4 KiB units (5.5.6); releasing one needs host pages no larger than that.
    long const host_page_size = ::sysconf(_SC_PAGESIZE);
    if (host_page_size != static_cast<long>(BALLOON_PAGE_SIZE))
        return Error::format("virtio balloon needs 4 KiB host pages, the host has {}-byte pages", host_page_size);
    auto config_changed = TRY(EventFd::create());
    int const timer = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timer < 0)
        return Error::from_errno("timerfd_create for the balloon's statistics timer");
    auto device = std::unique_ptr<BalloonDevice>(
        new BalloonDevice(event_loop, options, std::move(config_changed), UniqueFd(timer)));
    TRY(device->set_target_mib(options.target_mib));
    TRY(device->set_stats_interval(options.stats_interval));
    auto* raw = device.get();
    TRY(event_loop.add(raw->m_config_changed.fd(), [raw] { raw->on_config_changed(); }));
    TRY(event_loop.add(raw->m_timer.get(), [raw] { raw->on_timer(); }));
    return device;
}

BalloonDevice::BalloonDevice(EventLoop& event_loop, BalloonOptions const& options, EventFd config_changed,
                             UniqueFd timer)
    : m_event_loop(event_loop), m_config_changed(std::move(config_changed)), m_timer(std::move(timer)),
      m_deflate_on_oom(options.deflate_on_oom), m_free_page_reporting(options.free_page_reporting) {}

BalloonDevice::~BalloonDevice() {
    // Removing an fd that create() never registered is harmless.
    m_event_loop.remove(m_timer.get());
    m_event_loop.remove(m_config_changed.fd());
}

uint64_t BalloonDevice::features() const {
    uint64_t features =
        feature_bit(BALLOON_F_STATS_VQ) | feature_bit(FEATURE_RING_INDIRECT_DESC) | feature_bit(FEATURE_RING_EVENT_IDX);
    if (m_deflate_on_oom)
        features |= feature_bit(BALLOON_F_DEFLATE_ON_OOM);
    if (m_free_page_reporting)
        features |= feature_bit(BALLOON_F_REPORTING);
    return features;
}

// ---- Configuration space (vCPU threads and the owner) ----

void BalloonDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    // 5.5.4, little-endian: num_pages, actual, free_page_hint_cmd_id and poison_val (both zero:
    // FREE_PAGE_HINT and PAGE_POISON are not offered).
    std::array<uint8_t, CONFIG_SIZE> image {};
    {
        MutexLock guard(m_lock);
        put_config<CONFIG_NUM_PAGES>(image, m_num_pages);
        put_config<CONFIG_ACTUAL>(image, m_actual_pages);
    }
    read_config_window(image, offset, data);
}

void BalloonDevice::write_config(uint64_t offset, std::span<uint8_t const> data) {
    // Only `actual` belongs to the driver (5.5.4: the driver writes the number of pages it has
    // given); num_pages is the host's, and the other fields need features not offered.
    size_t ignored = 0;
    {
        MutexLock guard(m_lock);
        std::array<uint8_t, sizeof(m_actual_pages)> actual {};
        put_config<0>(actual, m_actual_pages);
        ignored = write_config_field(actual, CONFIG_ACTUAL, offset, data);
        std::memcpy(&m_actual_pages, actual.data(), actual.size());
    }
    if (ignored)
        guest_error(fmt::format("{}-byte config write at offset {:#x} touches fields other than `actual`", data.size(),
                                offset));
}

uint32_t BalloonDevice::config_generation() const {
    MutexLock guard(m_lock);
    return m_generation;
}

Expected<void> BalloonDevice::set_target_mib(uint64_t mib) {
    uint64_t const max_mib = std::numeric_limits<uint32_t>::max() / PAGES_PER_MIB;
    if (mib > max_mib)
        return Error::format("balloon target of {} MiB does not fit the 32-bit page count (at most {} MiB)", mib,
                             max_mib);
    {
        MutexLock guard(m_lock);
        m_num_pages = static_cast<uint32_t>(mib * PAGES_PER_MIB);
        ++m_generation;
    }
    // The interrupt belongs to the event loop's thread (VirtioInterrupt); wake it.
    return m_config_changed.signal();
}

uint64_t BalloonDevice::target_mib() const {
    MutexLock guard(m_lock);
    return m_num_pages / PAGES_PER_MIB;
}

uint64_t BalloonDevice::actual_mib() const { return actual_pages() / PAGES_PER_MIB; }

uint32_t BalloonDevice::actual_pages() const {
    MutexLock guard(m_lock);
    return m_actual_pages;
}

BalloonStatistics BalloonDevice::statistics() const {
    MutexLock guard(m_lock);
    return m_statistics;
}

Expected<void> BalloonDevice::set_stats_interval(std::chrono::milliseconds interval) {
    if (interval.count() < 0)
        return Error::format("negative balloon statistics interval of {} ms", interval.count());
    auto const seconds = std::chrono::duration_cast<std::chrono::seconds>(interval);
    timespec period {};
    period.tv_sec = static_cast<time_t>(seconds.count());
    period.tv_nsec = static_cast<long>(std::chrono::nanoseconds(interval - seconds).count());
    itimerspec const setting { period, period }; // an all-zero value disarms the timer
    // Under the lock, so that concurrent callers leave the timer and the saved interval agreeing.
    MutexLock guard(m_lock);
    if (::timerfd_settime(m_timer.get(), 0, &setting, nullptr) != 0)
        return Error::from_errno(fmt::format("timerfd_settime to {} ms for the balloon statistics", interval.count()));
    m_stats_interval = interval;
    return {};
}

std::chrono::milliseconds BalloonDevice::stats_interval() const {
    MutexLock guard(m_lock);
    return m_stats_interval;
}

// ---- Event-loop thread ----

Expected<BalloonDevice::QueueRoles> BalloonDevice::assign_roles(ActivationContext const& context) {
    // 5.5.2: the queues the driver uses are numbered in order, skipping those whose feature
    // was not negotiated (the driver numbers them the same way when it sets them up).
    QueueRoles result;
    auto& roles = result.roles;
    size_t next = 0;
    roles[next++] = Role::Inflate;
    roles[next++] = Role::Deflate;
    if (has_feature(context.features, BALLOON_F_STATS_VQ))
        roles[next++] = Role::Stats;
    if (has_feature(context.features, BALLOON_F_REPORTING))
        roles[next++] = Role::Reporting;
    if (context.queues.size() < QUEUE_COUNT)
        return Error::format("balloon activated with {} queues, expected {}", context.queues.size(), QUEUE_COUNT);

    for (size_t i = 0; i < QUEUE_COUNT; ++i) {
        bool const present = context.queues[i].has_value();
        if (roles[i] == Role::Inflate || roles[i] == Role::Deflate) {
            if (!present)
                return Error::format("the balloon's {} queue (index {}) was not set up",
                                     roles[i] == Role::Inflate ? "inflate" : "deflate", i);
        } else if (roles[i] == Role::None) {
            if (present)
                guest_error(fmt::format("queue {} set up but no negotiated feature uses it; ignored", i));
        } else if (!present) {
            roles[i] = Role::None; // negotiated but not set up: the driver does without it
        } else if (roles[i] == Role::Stats) {
            result.stats_queue = i;
        }
    }
    return result;
}

Expected<void> BalloonDevice::activate(ActivationContext context) {
    auto const assigned = TRY(assign_roles(context));
    m_roles = assigned.roles;
    m_stats_queue = assigned.stats_queue;
    m_held_stats_head.reset();
    take_context(std::move(context));
    return {};
}

void BalloonDevice::reset() {
    drop_context();
    m_roles = {};
    m_stats_queue.reset();
    m_held_stats_head.reset();
    // A rebooted guest owns all its memory again; the host target stays.
    MutexLock guard(m_lock);
    m_actual_pages = 0;
}

void BalloonDevice::on_failed() {
    m_roles = {};
    m_stats_queue.reset();
    m_held_stats_head.reset();
}

void BalloonDevice::process_queue(size_t index) {
    if (!active() || index >= QUEUE_COUNT || m_roles[index] == Role::None)
        return;
    fail_on_error(drain(index));
}

Expected<void> BalloonDevice::drain(size_t index) {
    Role const role = m_roles[index];
    auto& queue = *context().queues[index];
    bool used_any = false;
    // Releasing memory costs in proportion to what was touched: bound each turn by chains and
    // by bytes of PFN arrays and reported ranges (work_budget.h).
    WorkBudget slice(WorkBudget::DEFAULT_CHAINS, MAX_BYTES_PER_WAKEUP);
    while (true) {
        if (slice.exhausted()) {
            yield_turn(index);
            break;
        }
        if (!TRY(queue.pop_or_enable_notifications(m_chain)))
            break;
        slice.charge_chain();
        slice.charge_bytes(m_chain.readable_length() + m_chain.writable_length());
        switch (role) {
        case Role::Inflate:
        case Role::Deflate:
            TRY(inflate_or_deflate(role, m_chain));
            TRY(queue.add_used(m_chain.head(), 0));
            used_any = true;
            break;
        case Role::Reporting:
            TRY(report_free_pages(m_chain));
            TRY(queue.add_used(m_chain.head(), 0));
            used_any = true;
            break;
        case Role::Stats:
            if (m_held_stats_head) {
                // 5.5.6.3: the driver has one stats buffer in flight; a second one means
                // it gave up on the first, so hand that one back rather than hold two.
                TRY(queue.add_used(*m_held_stats_head, 0));
                m_held_stats_head.reset();
                used_any = true;
            }
            TRY(receive_statistics(m_chain));
            break;
        case Role::None:
            return {};
        }
    }
    if (used_any)
        TRY(interrupt_if_wanted(queue));
    return {};
}

Expected<void> BalloonDevice::inflate_or_deflate(Role role, DescriptorChain const& chain) {
    auto const& memory = *context().memory;
    uint64_t const limit = uint64_t { MAX_PFNS_PER_BUFFER } * sizeof(uint32_t);
    if (chain.readable_length() > limit) {
        m_malformed_buffers.fetch_add(1, std::memory_order_relaxed);
        guest_error(fmt::format("{}-byte PFN array, only the first {} PFNs are used", chain.readable_length(),
                                MAX_PFNS_PER_BUFFER));
    }
    m_scratch.resize(static_cast<size_t>(std::min(chain.readable_length(), limit)));
    size_t const got = TRY(chain.read(memory, 0, m_scratch));
    size_t const trailing = decode_pfns(std::span(m_scratch).first(got), m_pfns);
    if (trailing) {
        // 5.5.6.1: the buffer is an array of le32; a partial entry carries no page.
        m_malformed_buffers.fetch_add(1, std::memory_order_relaxed);
        guest_error(
            fmt::format("PFN array of {} bytes is not a multiple of 4; {} trailing bytes ignored", got, trailing));
    }
    if (role == Role::Deflate) {
        // Nothing to do on the host: a released page faults back in zeroed when the guest
        // touches it again (MUST_TELL_HOST is not offered, so the guest may already have).
        m_deflated_pages.fetch_add(m_pfns.size(), std::memory_order_relaxed);
        return {};
    }

    size_t outside = 0;
    uint64_t first_outside = 0;
    std::erase_if(m_pfns, [&](uint32_t pfn) {
        uint64_t const address = uint64_t { pfn } << BALLOON_PFN_SHIFT;
        if (memory.contains_range(GuestAddress(address), BALLOON_PAGE_SIZE))
            return false;
        if (outside++ == 0)
            first_outside = pfn;
        return true;
    });
    if (outside) {
        m_rejected_pages.fetch_add(outside, std::memory_order_relaxed);
        guest_error(fmt::format("inflate: {} PFNs outside guest RAM skipped (first {:#x})", outside, first_outside));
    }
    coalesce_pfns(m_pfns, m_runs);
    for (auto const& run : m_runs) {
        auto released = release_guest_range(memory, GuestAddress(run.first_pfn << BALLOON_PFN_SHIFT),
                                            run.count << BALLOON_PFN_SHIFT, m_pieces);
        if (!released) {
            // The host keeps the memory; the guest's view is unaffected, so carry on.
            m_release_failures.fetch_add(1, std::memory_order_relaxed);
            guest_error(fmt::format("inflate: {}", released.error().message()));
            continue;
        }
        m_inflated_pages.fetch_add(run.count, std::memory_order_relaxed);
    }
    return {};
}

Expected<void> BalloonDevice::report_free_pages(DescriptorChain const& chain) {
    // 5.5.6.5: each device-writable buffer is a range of free guest pages the host may take.
    if (!chain.readable().empty()) {
        m_malformed_buffers.fetch_add(1, std::memory_order_relaxed);
        guest_error(
            fmt::format("free page report with {} device-readable buffers; they are ignored", chain.readable().size()));
    }
    auto const& memory = *context().memory;
    for (auto const& segment : chain.writable()) {
        if (segment.address.value() % BALLOON_PAGE_SIZE != 0 || segment.length % BALLOON_PAGE_SIZE != 0 ||
            segment.length == 0) {
            m_rejected_pages.fetch_add(1, std::memory_order_relaxed);
            guest_error(fmt::format("free page report {:#x}+{:#x} is not whole 4 KiB pages; skipped",
                                    segment.address.value(), segment.length));
            continue;
        }
        auto released = release_guest_range(memory, segment.address, segment.length, m_pieces);
        if (!released) {
            m_release_failures.fetch_add(1, std::memory_order_relaxed);
            guest_error(fmt::format("free page report: {}", released.error().message()));
            continue;
        }
        m_reported_bytes.fetch_add(segment.length, std::memory_order_relaxed);
    }
    return {};
}

Expected<void> BalloonDevice::receive_statistics(DescriptorChain const& chain) {
    uint64_t const limit = BalloonStatistics::MAX_ENTRIES * STAT_ENTRY_SIZE;
    m_scratch.resize(static_cast<size_t>(std::min(chain.readable_length(), limit)));
    size_t const got = TRY(chain.read(*context().memory, 0, m_scratch));
    if (chain.readable_length() % STAT_ENTRY_SIZE != 0 || chain.readable_length() > limit) {
        m_malformed_buffers.fetch_add(1, std::memory_order_relaxed);
        guest_error(fmt::format(
            "stats buffer of {} bytes is not a whole number of 10-byte entries (at most {}); the rest is ignored",
            chain.readable_length(), BalloonStatistics::MAX_ENTRIES));
    }
    {
        MutexLock guard(m_lock);
        m_statistics.parse(std::span(m_scratch).first(got));
    }
    m_stats_updates.fetch_add(1, std::memory_order_relaxed);
    // Kept until the next poll (5.5.6.3): returning it is how the device asks for new values.
    m_held_stats_head = chain.head();
    return {};
}

Expected<void> BalloonDevice::request_statistics() {
    if (!active() || !m_stats_queue || !m_held_stats_head)
        return {};
    auto& queue = *context().queues[*m_stats_queue];
    TRY(queue.add_used(*m_held_stats_head, 0));
    m_held_stats_head.reset();
    m_stats_requests.fetch_add(1, std::memory_order_relaxed);
    TRY(interrupt_if_wanted(queue));
    return {};
}

void BalloonDevice::on_timer() {
    uint64_t expirations = 0;
    // Level-triggered: the count must be read or the loop spins. EAGAIN (a disarm raced) is fine.
    if (::read(m_timer.get(), &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        spdlog::warn("virtio balloon: reading the statistics timer: {}", std::strerror(errno));
    fail_on_error(request_statistics());
}

void BalloonDevice::on_config_changed() {
    (void)m_config_changed.consume();
    // Before activation the driver reads num_pages when it starts; no interrupt is due.
    if (active())
        context().interrupt->signal_config_change();
}

} // namespace kvmm::virtio

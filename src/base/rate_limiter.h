// RateLimiter: limits a device's I/O with two optional token buckets, one for
// bandwidth (bytes) and one for operations, as Firecracker's RateLimiter does.
//
// A request either takes one op token and its byte tokens, or nothing. When it
// is refused, the limiter is "blocked": a timerfd is armed for the moment the
// refused request would fit, and every consume() fails until the event loop
// sees timer_fd() readable and calls on_timer(). Devices stop processing their
// queue while blocked and resume from the timer callback, so a limited device
// costs no CPU while it waits.
//
// Firecracker's API treats a bucket whose size or refill_time_ms is 0 as "no
// limit"; so do create() and update().
//
// Threading: none; one limiter belongs to the event-loop thread of its device,
// and save()/restore() run on that thread while the VM is paused. The Clock
// must outlive the limiter.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "base/token_bucket.h"
#include "base/unique_fd.h"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace kvmm {

// Limits on a device's I/O: bytes per refill period and operations per refill period.
struct RateLimitConfig {
    std::optional<TokenBucketConfig> bandwidth;
    std::optional<TokenBucketConfig> ops;

    bool empty() const { return !bandwidth && !ops; }
    bool operator==(RateLimitConfig const&) const = default;
};

// `current` with `changes` applied the way RateLimiter::update applies them: a bucket given
// replaces the old one, a bucket given with size or refill_time_ms 0 removes it, a bucket not
// given stays. The result holds no such zero bucket.
RateLimitConfig apply_rate_limit_changes(RateLimitConfig current, RateLimitConfig const& changes);

// A limiter's saved state (docs/ARCHITECTURE.md "Saved state"): each bucket's state (absent
// where the limiter has no such bucket) and whether a refused request is waiting for the
// timer. The timer's deadline is not kept: a restored blocked limiter fires at once and its
// device retries, which either passes or blocks again for exactly the wait the restored
// buckets need, so no clock reading crosses hosts here either.
struct RateLimiterState {
    static constexpr std::string_view SECTION = "rate-limiter";
    static constexpr uint32_t VERSION = 1;

    std::optional<TokenBucketState> bandwidth;
    std::optional<TokenBucketState> ops;
    bool blocked { false };

    bool operator==(RateLimiterState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<RateLimiterState> decode(StateReader& reader);
};

class RateLimiter {
public:
    // Creates the buckets and the timerfd (CLOCK_MONOTONIC, non-blocking, close-on-exec).
    static Expected<RateLimiter> create(RateLimitConfig const& config, Clock const& clock = monotonic_clock());

    // Fails as create() would on `config`, naming the bad bucket; creates nothing.
    static Expected<void> validate(RateLimitConfig const& config);

    // Takes one op and `bytes` bandwidth tokens and returns true, or takes nothing, arms the
    // timer and returns false. Always false while blocked; always true without buckets.
    bool consume(uint64_t bytes);

    // Changes the limits of a running device (Firecracker's PATCH of a rate_limiter): a bucket
    // given replaces the old one and starts full, as a new bucket does; a bucket given with
    // size or refill_time_ms 0 is removed; a bucket not given stays as it is. Nothing changes
    // when the new bucket is invalid. A blocked limiter's timer is re-armed to fire at once,
    // so its device retries under the new limits from its timer callback (and not before the
    // event loop runs: a paused VM stays paused).
    Expected<void> update(RateLimitConfig const& changes);

    // Readable when a refused request may fit again; register it with the event loop.
    int timer_fd() const { return m_timer.get(); }

    // Call when timer_fd() is readable: drains and disarms the timer and unblocks.
    void on_timer();

    RateLimiterState save() const;
    // Puts a limiter created from the same configuration where save() left it. A blocked
    // state arms the timer to fire at once (as update() does), so the device retries from its
    // timer callback once the event loop runs again. Refused, naming the bucket and the field
    // and changing nothing, when a bucket is present in only one of the two or its state does
    // not fit it (TokenBucket::restore), or a limiter without buckets is said to be blocked.
    Expected<void> restore(RateLimiterState const& state);

    bool is_blocked() const { return m_blocked; }
    bool is_unlimited() const { return !m_bandwidth && !m_ops; }

    // The time the timer was last armed for (for tests and metrics).
    std::chrono::nanoseconds last_timer_delay() const { return m_last_timer_delay; }

private:
    RateLimiter(std::optional<TokenBucket> bandwidth, std::optional<TokenBucket> ops, UniqueFd timer,
                Clock const& clock)
        : m_bandwidth(bandwidth), m_ops(ops), m_timer(std::move(timer)), m_clock(&clock) {}

    void block(uint64_t bytes);
    bool arm_timer(std::chrono::nanoseconds delay);

    std::optional<TokenBucket> m_bandwidth;
    std::optional<TokenBucket> m_ops;
    UniqueFd m_timer;
    Clock const* m_clock;
    bool m_blocked { false };
    std::chrono::nanoseconds m_last_timer_delay { 0 };
};

} // namespace kvmm

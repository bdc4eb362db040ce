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
// limit"; so does create().
//
// Threading: none; one limiter belongs to the event-loop thread of its device.
// The Clock must outlive the limiter.
#pragma once

#include "base/expected.h"
#include "base/token_bucket.h"
#include "base/unique_fd.h"

#include <chrono>
#include <cstdint>
#include <optional>

namespace kvmm {

// Limits on a device's I/O: bytes per refill period and operations per refill period.
struct RateLimitConfig {
    std::optional<TokenBucketConfig> bandwidth;
    std::optional<TokenBucketConfig> ops;

    bool empty() const { return !bandwidth && !ops; }
    bool operator==(RateLimitConfig const&) const = default;
};

class RateLimiter {
public:
    // Creates the buckets and the timerfd (CLOCK_MONOTONIC, non-blocking, close-on-exec).
    static Expected<RateLimiter> create(RateLimitConfig const& config, Clock const& clock = monotonic_clock());

    // Takes one op and `bytes` bandwidth tokens and returns true, or takes nothing, arms the
    // timer and returns false. Always false while blocked; always true without buckets.
    bool consume(uint64_t bytes);

    // Readable when a refused request may fit again; register it with the event loop.
    int timer_fd() const { return m_timer.get(); }

    // Call when timer_fd() is readable: drains and disarms the timer and unblocks.
    void on_timer();

    bool is_blocked() const { return m_blocked; }
    bool is_unlimited() const { return !m_bandwidth && !m_ops; }

    // The time the timer was last armed for (for tests and metrics).
    std::chrono::nanoseconds last_timer_delay() const { return m_last_timer_delay; }

private:
    RateLimiter(std::optional<TokenBucket> bandwidth, std::optional<TokenBucket> ops, UniqueFd timer)
        : m_bandwidth(std::move(bandwidth)), m_ops(std::move(ops)), m_timer(std::move(timer)) {}

    void block(uint64_t bytes);

    std::optional<TokenBucket> m_bandwidth;
    std::optional<TokenBucket> m_ops;
    UniqueFd m_timer;
    bool m_blocked { false };
    std::chrono::nanoseconds m_last_timer_delay { 0 };
};

} // namespace kvmm

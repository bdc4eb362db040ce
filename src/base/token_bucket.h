// TokenBucket: the rate-limiting primitive behind RateLimiter, with
// Firecracker's semantics (its TokenBucket in src/vmm/src/rate_limiter):
//   - `size` tokens of capacity, refilled linearly: `size` tokens every
//     `refill_time_ms` milliseconds, never beyond `size`;
//   - a `one_time_burst` of extra tokens, spent before the regular budget and
//     never refilled;
//   - a request larger than everything the bucket can ever hold would never
//     pass, so it is allowed when the regular budget is full: the bucket then
//     goes into debt (a negative budget) that the refill pays back first. The
//     long-run rate therefore stays `size` per `refill_time_ms` even for such
//     requests.
// Refill is exact: the fraction of a token earned between two calls is
// carried, so no rate is lost to rounding however often the bucket is polled.
//
// Time comes from a Clock so that tests drive it deterministically.
//
// Threading: none; a bucket belongs to the one thread (the event loop) that
// uses it, and save()/restore() run on that thread. The Clock must outlive the
// bucket.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"

#include <chrono>
#include <cstdint>
#include <string_view>

namespace kvmm {

// A monotonic time source. The real one reads CLOCK_MONOTONIC; tests supply their own.
class Clock {
public:
    virtual ~Clock() = default;
    // Time since an arbitrary fixed origin; never decreases.
    virtual std::chrono::nanoseconds now() const = 0;
};

// The process-wide CLOCK_MONOTONIC clock (thread-safe, stateless).
Clock const& monotonic_clock();

// Firecracker's TokenBucket fields (and its API's JSON names).
struct TokenBucketConfig {
    uint64_t size { 0 };
    uint64_t one_time_burst { 0 };
    uint64_t refill_time_ms { 0 };

    bool operator==(TokenBucketConfig const&) const = default;
};

// A bucket's saved state (docs/ARCHITECTURE.md "Saved state"): its configuration (checked on
// restore: a state belongs to a bucket made from the same one), what is left of the budget
// and the burst, the token fraction carried, and how long before the save the bucket was last
// refilled. That last one is an interval, not a timestamp: CLOCK_MONOTONIC counts from the
// host's boot, so a saved absolute time means nothing on another host or after a reboot.
// Restored there it would lie far in the future (the bucket would not refill until that
// host's clock caught up: a device stalled for hours or days) or far in the past (a bucket
// instantly full, however much debt it had). An interval is valid anywhere: the restored
// bucket continues as if the time between save and restore (the VM paused, the state in
// transit) had not passed, neither refilling it nor taking from it.
struct TokenBucketState {
    static constexpr std::string_view SECTION = "token-bucket";
    static constexpr uint32_t VERSION = 1;

    TokenBucketConfig config;
    int64_t budget { 0 };                // in [-INT64_MAX, size]; negative while in debt
    uint64_t one_time_burst_left { 0 };  // at most config.one_time_burst
    uint64_t fraction { 0 };             // below refill_time_ms in nanoseconds
    uint64_t since_last_refill_ns { 0 }; // at most INT64_MAX

    bool operator==(TokenBucketState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<TokenBucketState> decode(StateReader& reader);
};

class TokenBucket {
public:
    // Fails when size or refill_time_ms is 0 (no rate), when size exceeds INT64_MAX or when
    // refill_time_ms does not fit in nanoseconds. The bucket starts full, with its burst.
    static Expected<TokenBucket> create(TokenBucketConfig const& config, Clock const& clock = monotonic_clock());

    // Takes `tokens` (burst first, then the budget) and returns true, or takes nothing and
    // returns false. Zero tokens always pass. See the header comment for oversized requests.
    bool consume(uint64_t tokens);

    // How long until consume(tokens) would succeed, assuming nothing else is consumed;
    // zero when it would succeed now. Rounded up, so a timer armed for it is never early.
    std::chrono::nanoseconds time_until(uint64_t tokens);

    // The tokens available now (burst plus a non-negative budget), after refilling.
    uint64_t available();
    uint64_t one_time_burst() const { return m_burst; }
    TokenBucketConfig const& config() const { return m_config; }

    // The state as of now (no refill is applied: the time since the last one is saved instead).
    TokenBucketState save() const;
    // Puts a bucket created from the same configuration where save() left it; its last refill
    // is placed `since_last_refill_ns` before this bucket's clock's now. Refused, naming the
    // field and changing nothing, when the configuration differs or a value is out of range.
    Expected<void> restore(TokenBucketState const& state);

private:
    TokenBucket(TokenBucketConfig const& config, uint64_t refill_time_ns, Clock const& clock);

    void refill();
    bool can_consume(uint64_t tokens) const;

    TokenBucketConfig m_config;
    uint64_t m_refill_time_ns { 0 };
    Clock const* m_clock { nullptr };
    std::chrono::nanoseconds m_last_update { 0 };
    // The regular budget; negative while an oversized request's debt is being paid back.
    int64_t m_budget { 0 };
    uint64_t m_burst { 0 };
    // Token fraction earned but not yet credited, in units of 1/refill_time_ns of a token.
    uint64_t m_fraction { 0 };
};

} // namespace kvmm

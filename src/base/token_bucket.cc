#include "base/token_bucket.h"

#include "base/checked_math.h"

#include <algorithm>
#include <ctime>
#include <limits>

namespace kvmm {

namespace {

class MonotonicClock final : public Clock {
public:
    std::chrono::nanoseconds now() const override {
        timespec time {};
        ::clock_gettime(CLOCK_MONOTONIC, &time);
        return std::chrono::seconds(time.tv_sec) + std::chrono::nanoseconds(time.tv_nsec);
    }
};

constexpr uint64_t NANOSECONDS_PER_MILLISECOND = 1'000'000;

using Wide = unsigned __int128;
using SignedWide = __int128;

} // namespace

Clock const& monotonic_clock() {
    static MonotonicClock const CLOCK;
    return CLOCK;
}

Expected<TokenBucket> TokenBucket::create(TokenBucketConfig const& config, Clock const& clock) {
    if (config.size == 0)
        return Error::format("token bucket size is 0: a bucket needs at least one token");
    if (config.size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return Error::format("token bucket size {} is larger than {}", config.size,
                             std::numeric_limits<int64_t>::max());
    if (config.refill_time_ms == 0)
        return Error::format("token bucket refill_time_ms is 0: the bucket would never limit anything");
    auto refill_time_ns = checked_mul(config.refill_time_ms, NANOSECONDS_PER_MILLISECOND);
    if (!refill_time_ns || *refill_time_ns > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return Error::format("token bucket refill_time_ms {} is too large", config.refill_time_ms);
    return TokenBucket(config, *refill_time_ns, clock);
}

TokenBucket::TokenBucket(TokenBucketConfig const& config, uint64_t refill_time_ns, Clock const& clock)
    : m_config(config), m_refill_time_ns(refill_time_ns), m_clock(&clock), m_last_update(clock.now()),
      m_budget(static_cast<int64_t>(config.size)), m_burst(config.one_time_burst) {}

void TokenBucket::refill() {
    auto const now = m_clock->now();
    if (now <= m_last_update)
        return;
    // A restored bucket's last refill may lie far before this clock's origin; the difference
    // is taken in 128 bits and capped at 2^63 - 1 ns (292 years), as the product below needs.
    auto const elapsed =
        static_cast<uint64_t>(std::min<SignedWide>(static_cast<SignedWide>(now.count()) - m_last_update.count(),
                                                   std::numeric_limits<int64_t>::max()));
    m_last_update = now;
    auto const size = static_cast<int64_t>(m_config.size);
    if (m_budget == size) {
        // A full bucket earns nothing; a fraction carried from before is worthless now.
        m_fraction = 0;
        return;
    }
    // elapsed < 2^63 and size < 2^63, so the product (plus a fraction < 2^63) fits in 128 bits.
    Wide const earned = static_cast<Wide>(elapsed) * m_config.size + m_fraction;
    Wide const new_tokens = earned / m_refill_time_ns;
    Wide const missing = static_cast<Wide>(static_cast<SignedWide>(size) - m_budget);
    if (new_tokens >= missing) {
        m_budget = size;
        m_fraction = 0;
    } else {
        // new_tokens < missing, so the sum stays below size; new_tokens alone may exceed
        // INT64_MAX when a deep debt (a restored or oversized one) is being paid back.
        m_budget = static_cast<int64_t>(static_cast<SignedWide>(m_budget) + static_cast<SignedWide>(new_tokens));
        m_fraction = static_cast<uint64_t>(earned % m_refill_time_ns);
    }
}

bool TokenBucket::can_consume(uint64_t tokens) const {
    if (tokens == 0)
        return true;
    Wide const available = static_cast<Wide>(m_burst) + static_cast<uint64_t>(std::max<int64_t>(m_budget, 0));
    // An oversized request passes on a full budget; otherwise it would wait forever.
    return tokens <= available || m_budget == static_cast<int64_t>(m_config.size);
}

bool TokenBucket::consume(uint64_t tokens) {
    refill();
    if (!can_consume(tokens))
        return false;
    if (tokens <= m_burst) {
        m_burst -= tokens;
        return true;
    }
    uint64_t const from_budget = tokens - m_burst;
    m_burst = 0;
    // The debt saturates at -INT64_MAX; only a request of more than 2^63 tokens reaches it.
    SignedWide const budget = static_cast<SignedWide>(m_budget) - static_cast<SignedWide>(from_budget);
    m_budget = static_cast<int64_t>(std::max<SignedWide>(budget, -std::numeric_limits<int64_t>::max()));
    return true;
}

std::chrono::nanoseconds TokenBucket::time_until(uint64_t tokens) {
    refill();
    if (can_consume(tokens))
        return std::chrono::nanoseconds(0);
    // can_consume() failed, so tokens > m_burst and the budget is below what the rest needs.
    uint64_t const target = std::min(tokens - m_burst, m_config.size);
    Wide const needed = static_cast<Wide>(static_cast<SignedWide>(target) - m_budget);
    Wide const numerator = needed * m_refill_time_ns - m_fraction;
    Wide const nanoseconds = (numerator + m_config.size - 1) / m_config.size;
    auto const limit = static_cast<Wide>(std::numeric_limits<int64_t>::max());
    return std::chrono::nanoseconds(static_cast<int64_t>(std::min(nanoseconds, limit)));
}

uint64_t TokenBucket::available() {
    refill();
    Wide const total = static_cast<Wide>(m_burst) + static_cast<uint64_t>(std::max<int64_t>(m_budget, 0));
    return static_cast<uint64_t>(std::min<Wide>(total, std::numeric_limits<uint64_t>::max()));
}

void TokenBucketState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u64(config.size);
    writer.u64(config.one_time_burst);
    writer.u64(config.refill_time_ms);
    writer.u64(static_cast<uint64_t>(budget));
    writer.u64(one_time_burst_left);
    writer.u64(fraction);
    writer.u64(since_last_refill_ns);
    writer.end_section();
}

Expected<TokenBucketState> TokenBucketState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    TokenBucketState state;
    state.config.size = TRY(reader.u64("size"));
    state.config.one_time_burst = TRY(reader.u64("one_time_burst"));
    state.config.refill_time_ms = TRY(reader.u64("refill_time_ms"));
    state.budget = static_cast<int64_t>(TRY(reader.u64("budget")));
    state.one_time_burst_left = TRY(reader.u64("one_time_burst_left"));
    state.fraction = TRY(reader.u64("fraction"));
    state.since_last_refill_ns = TRY(reader.u64("since_last_refill_ns"));
    TRY(reader.end_section());
    return state;
}

TokenBucketState TokenBucket::save() const {
    auto const now = m_clock->now();
    SignedWide const since = static_cast<SignedWide>(now.count()) - m_last_update.count();
    return TokenBucketState {
        .config = m_config,
        .budget = m_budget,
        .one_time_burst_left = m_burst,
        .fraction = m_fraction,
        .since_last_refill_ns =
            static_cast<uint64_t>(std::clamp<SignedWide>(since, 0, std::numeric_limits<int64_t>::max())),
    };
}

Expected<void> TokenBucket::restore(TokenBucketState const& state) {
    auto const& config = state.config;
    if (config != m_config)
        return Error::format("token bucket state: config (size {}, one_time_burst {}, refill_time_ms {}) is not this "
                             "bucket's (size {}, one_time_burst {}, refill_time_ms {})",
                             config.size, config.one_time_burst, config.refill_time_ms, m_config.size,
                             m_config.one_time_burst, m_config.refill_time_ms);
    auto const size = static_cast<int64_t>(m_config.size);
    // consume() saturates a debt at -INT64_MAX, so INT64_MIN is never a budget.
    if (state.budget < -std::numeric_limits<int64_t>::max() || state.budget > size)
        return Error::format("token bucket state: budget {} is outside [{}, {}]", state.budget,
                             -std::numeric_limits<int64_t>::max(), size);
    if (state.one_time_burst_left > m_config.one_time_burst)
        return Error::format("token bucket state: one_time_burst_left {} is more than the one_time_burst {}",
                             state.one_time_burst_left, m_config.one_time_burst);
    if (state.fraction >= m_refill_time_ns)
        return Error::format("token bucket state: fraction {} is not below the refill time of {} ns", state.fraction,
                             m_refill_time_ns);
    if (state.since_last_refill_ns > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return Error::format("token bucket state: since_last_refill_ns {} is more than {}", state.since_last_refill_ns,
                             std::numeric_limits<int64_t>::max());
    SignedWide const last_update =
        static_cast<SignedWide>(m_clock->now().count()) - static_cast<SignedWide>(state.since_last_refill_ns);
    m_last_update = std::chrono::nanoseconds(
        static_cast<int64_t>(std::max<SignedWide>(last_update, std::numeric_limits<int64_t>::min())));
    m_budget = state.budget;
    m_burst = state.one_time_burst_left;
    m_fraction = state.fraction;
    return {};
}

} // namespace kvmm

#include "base/rate_limiter.h"

#include <spdlog/spdlog.h>

#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace kvmm {

namespace {

// Firecracker's API: a zero size or refill time means the bucket is absent.
bool limits_anything(TokenBucketConfig const& config) { return config.size != 0 && config.refill_time_ms != 0; }

Expected<std::optional<TokenBucket>> make_bucket(std::optional<TokenBucketConfig> const& config, std::string_view name,
                                                 Clock const& clock) {
    if (!config || !limits_anything(*config))
        return std::optional<TokenBucket> {};
    auto bucket = TRY(TokenBucket::create(*config, clock).with_context(name));
    return std::optional<TokenBucket>(bucket);
}

// A timer armed with zero would be disarmed instead; never wait less than this.
constexpr std::chrono::nanoseconds MINIMUM_TIMER_DELAY { 1000 };

} // namespace

RateLimitConfig apply_rate_limit_changes(RateLimitConfig current, RateLimitConfig const& changes) {
    auto apply = [](std::optional<TokenBucketConfig>& bucket, std::optional<TokenBucketConfig> const& change) {
        if (!change)
            return;
        if (limits_anything(*change))
            bucket = change;
        else
            bucket.reset();
    };
    apply(current.bandwidth, changes.bandwidth);
    apply(current.ops, changes.ops);
    return current;
}

Expected<RateLimiter> RateLimiter::create(RateLimitConfig const& config, Clock const& clock) {
    auto bandwidth = TRY(make_bucket(config.bandwidth, "bandwidth bucket", clock));
    auto ops = TRY(make_bucket(config.ops, "ops bucket", clock));
    int timer = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timer < 0)
        return Error::from_errno("rate limiter: timerfd_create");
    return RateLimiter(bandwidth, ops, UniqueFd(timer), clock);
}

Expected<void> RateLimiter::validate(RateLimitConfig const& config) {
    TRY(make_bucket(config.bandwidth, "bandwidth bucket", monotonic_clock()));
    TRY(make_bucket(config.ops, "ops bucket", monotonic_clock()));
    return {};
}

Expected<void> RateLimiter::update(RateLimitConfig const& changes) {
    // Both new buckets are made before either is installed, so a bad one changes nothing.
    std::optional<std::optional<TokenBucket>> bandwidth;
    std::optional<std::optional<TokenBucket>> ops;
    if (changes.bandwidth)
        bandwidth = TRY(make_bucket(changes.bandwidth, "bandwidth bucket", *m_clock));
    if (changes.ops)
        ops = TRY(make_bucket(changes.ops, "ops bucket", *m_clock));
    if (bandwidth)
        m_bandwidth = *bandwidth;
    if (ops)
        m_ops = *ops;
    if (m_blocked && !arm_timer(MINIMUM_TIMER_DELAY)) {
        // Without the timer nothing would wake the device up; unblocked, it retries on its
        // next event instead.
        m_blocked = false;
    }
    return {};
}

bool RateLimiter::consume(uint64_t bytes) {
    if (m_blocked)
        return false;
    // Check both buckets before taking from either, so a refusal takes nothing.
    bool const ops_ready = !m_ops || m_ops->time_until(1).count() == 0;
    bool const bytes_ready = !m_bandwidth || m_bandwidth->time_until(bytes).count() == 0;
    if (!ops_ready || !bytes_ready) {
        block(bytes);
        return false;
    }
    if (m_ops)
        m_ops->consume(1);
    if (m_bandwidth)
        m_bandwidth->consume(bytes);
    return true;
}

void RateLimiter::block(uint64_t bytes) {
    auto delay = std::chrono::nanoseconds(0);
    if (m_ops)
        delay = std::max(delay, m_ops->time_until(1));
    if (m_bandwidth)
        delay = std::max(delay, m_bandwidth->time_until(bytes));
    delay = std::max(delay, MINIMUM_TIMER_DELAY);
    if (!arm_timer(delay))
        return; // without a timer nothing would wake the device: stay unblocked, retry later
    m_last_timer_delay = delay;
    m_blocked = true;
}

bool RateLimiter::arm_timer(std::chrono::nanoseconds delay) {
    auto const seconds = std::chrono::duration_cast<std::chrono::seconds>(delay);
    itimerspec timer {};
    timer.it_value.tv_sec = seconds.count();
    timer.it_value.tv_nsec = (delay - seconds).count();
    if (::timerfd_settime(m_timer.get(), 0, &timer, nullptr) != 0) {
        spdlog::error("rate limiter: timerfd_settime failed: {}", std::strerror(errno));
        return false;
    }
    return true;
}

void RateLimiter::on_timer() {
    uint64_t expirations = 0;
    // EAGAIN (the timer has not fired yet) is fine: disarming below makes it moot.
    [[maybe_unused]] auto const got = ::read(m_timer.get(), &expirations, sizeof(expirations));
    itimerspec const disarm {};
    ::timerfd_settime(m_timer.get(), 0, &disarm, nullptr);
    m_blocked = false;
}

namespace {

void encode_bucket(StateWriter& writer, std::optional<TokenBucketState> const& bucket) {
    writer.boolean(bucket.has_value());
    if (bucket)
        bucket->encode(writer);
}

Expected<std::optional<TokenBucketState>> decode_bucket(StateReader& reader, std::string_view name) {
    if (!TRY(reader.boolean(name)))
        return std::optional<TokenBucketState> {};
    auto bucket = TRY(TokenBucketState::decode(reader).with_context(name));
    return std::optional<TokenBucketState>(bucket);
}

// The bucket a restore would install: `current` with `saved` applied, or an error naming it.
Expected<std::optional<TokenBucket>> restored_bucket(std::optional<TokenBucket> current,
                                                     std::optional<TokenBucketState> const& saved,
                                                     std::string_view name) {
    if (current.has_value() != saved.has_value())
        return Error::format("rate limiter state: {}: saved {} a bucket, but this limiter has {}", name,
                             saved ? "with" : "without", current ? "one" : "none");
    if (current)
        TRY(current->restore(*saved).with_context(name));
    return current;
}

} // namespace

void RateLimiterState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    encode_bucket(writer, bandwidth);
    encode_bucket(writer, ops);
    writer.boolean(blocked);
    writer.end_section();
}

Expected<RateLimiterState> RateLimiterState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    RateLimiterState state;
    state.bandwidth = TRY(decode_bucket(reader, "bandwidth"));
    state.ops = TRY(decode_bucket(reader, "ops"));
    state.blocked = TRY(reader.boolean("blocked"));
    TRY(reader.end_section());
    return state;
}

RateLimiterState RateLimiter::save() const {
    RateLimiterState state;
    if (m_bandwidth)
        state.bandwidth = m_bandwidth->save();
    if (m_ops)
        state.ops = m_ops->save();
    state.blocked = m_blocked;
    return state;
}

Expected<void> RateLimiter::restore(RateLimiterState const& state) {
    // Both buckets are restored on copies before either is installed, so a refusal changes nothing.
    auto bandwidth = TRY(restored_bucket(m_bandwidth, state.bandwidth, "bandwidth"));
    auto ops = TRY(restored_bucket(m_ops, state.ops, "ops"));
    if (state.blocked && !bandwidth && !ops)
        return Error("rate limiter state: blocked: a limiter without buckets never blocks");
    m_bandwidth = bandwidth;
    m_ops = ops;
    if (state.blocked) {
        // Without the timer nothing would wake the device up; unblocked, it retries on its
        // next event instead (as in update()).
        m_blocked = arm_timer(MINIMUM_TIMER_DELAY);
    } else if (m_blocked) {
        itimerspec const disarm {};
        ::timerfd_settime(m_timer.get(), 0, &disarm, nullptr);
        m_blocked = false;
    }
    return {};
}

} // namespace kvmm

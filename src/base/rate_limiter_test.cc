#include "base/rate_limiter.h"

#include "base/testing/manual_clock.h"
#include "base/testing/state_round_trip.h"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/timerfd.h>

#include <string>

namespace kvmm {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using testing::ManualClock;

nanoseconds armed_time_left(int timer_fd) {
    itimerspec current {};
    EXPECT_EQ(::timerfd_gettime(timer_fd, &current), 0);
    return seconds(current.it_value.tv_sec) + nanoseconds(current.it_value.tv_nsec);
}

TEST(RateLimiter, NoBucketsOrZeroSizedBuckets_NeverLimit) {
    ManualClock clock;
    RateLimitConfig config;
    config.bandwidth = TokenBucketConfig { .size = 0, .one_time_burst = 0, .refill_time_ms = 100 };
    config.ops = TokenBucketConfig { .size = 10, .one_time_burst = 0, .refill_time_ms = 0 };
    auto limiter = MUST(RateLimiter::create(config, clock));
    EXPECT_TRUE(limiter.is_unlimited());
    for (int i = 0; i < 1000; ++i)
        ASSERT_TRUE(limiter.consume(1 << 20));
    EXPECT_FALSE(limiter.is_blocked());
}

TEST(RateLimiter, InvalidBucket_ErrorNamesTheBucket) {
    RateLimitConfig config;
    config.ops = TokenBucketConfig { .size = 10, .one_time_burst = 0, .refill_time_ms = ~0ull };
    auto limiter = RateLimiter::create(config);
    ASSERT_FALSE(limiter.has_value());
    EXPECT_NE(limiter.error().message().find("ops bucket"), std::string::npos);
}

TEST(RateLimiter, RefusedRequest_TakesNeitherOpNorBytes) {
    ManualClock clock;
    RateLimitConfig config;
    config.bandwidth = TokenBucketConfig { .size = 1000, .one_time_burst = 0, .refill_time_ms = 1000 };
    config.ops = TokenBucketConfig { .size = 2, .one_time_burst = 0, .refill_time_ms = 1000 };
    auto limiter = MUST(RateLimiter::create(config, clock));
    EXPECT_TRUE(limiter.consume(400));
    EXPECT_TRUE(limiter.consume(400));
    EXPECT_FALSE(limiter.consume(100)); // out of ops
    // One op comes back after 500 ms, when 200 + 500 bytes are there if the refusal took none.
    EXPECT_EQ(limiter.last_timer_delay(), milliseconds(500));
    clock.advance(milliseconds(500));
    limiter.on_timer();
    EXPECT_TRUE(limiter.consume(700));
}

TEST(RateLimiter, Blocked_ArmsTheTimerForTheWaitAndUnblocksOnTimer) {
    ManualClock clock;
    RateLimitConfig config;
    config.bandwidth = TokenBucketConfig { .size = 1000, .one_time_burst = 500, .refill_time_ms = 100 };
    auto limiter = MUST(RateLimiter::create(config, clock));
    EXPECT_TRUE(limiter.consume(1500)); // burst and budget
    EXPECT_FALSE(limiter.consume(300));
    EXPECT_TRUE(limiter.is_blocked());
    EXPECT_EQ(limiter.last_timer_delay(), milliseconds(30));
    auto const left = armed_time_left(limiter.timer_fd());
    EXPECT_GT(left, nanoseconds(0));
    EXPECT_LE(left, milliseconds(30));
    // While blocked, requests are refused even once tokens are back: the timer unblocks.
    clock.advance(milliseconds(30));
    EXPECT_FALSE(limiter.consume(300));
    limiter.on_timer();
    EXPECT_FALSE(limiter.is_blocked());
    EXPECT_EQ(armed_time_left(limiter.timer_fd()), nanoseconds(0)); // disarmed
    EXPECT_TRUE(limiter.consume(300));
}

TEST(RateLimiter, TimerFd_BecomesReadableWhenTokensAreBack) {
    RateLimitConfig config;
    // 1000 bytes per 2 ms on the real clock: 500 bytes take about 1 ms to come back.
    config.bandwidth = TokenBucketConfig { .size = 1000, .one_time_burst = 0, .refill_time_ms = 2 };
    auto limiter = MUST(RateLimiter::create(config));
    ASSERT_TRUE(limiter.consume(1000));
    ASSERT_FALSE(limiter.consume(500));
    pollfd wait { .fd = limiter.timer_fd(), .events = POLLIN, .revents = 0 };
    ASSERT_EQ(::poll(&wait, 1, 5000), 1);
    limiter.on_timer();
    EXPECT_TRUE(limiter.consume(500));
}

TEST(RateLimiter, Update_GivenBucketReplacesTheOldOneAndStartsFull) {
    ManualClock clock;
    RateLimitConfig config;
    config.bandwidth = TokenBucketConfig { .size = 1000, .one_time_burst = 0, .refill_time_ms = 1000 };
    config.ops = TokenBucketConfig { .size = 1, .one_time_burst = 0, .refill_time_ms = 1000 };
    auto limiter = MUST(RateLimiter::create(config, clock));
    ASSERT_TRUE(limiter.consume(1000));
    RateLimitConfig changes;
    changes.bandwidth = TokenBucketConfig { .size = 5000, .one_time_burst = 0, .refill_time_ms = 1000 };
    MUST(limiter.update(changes));
    // The new bandwidth bucket is full; the ops bucket, not given, is still empty.
    EXPECT_FALSE(limiter.consume(5000));
    clock.advance(seconds(1));
    limiter.on_timer();
    EXPECT_TRUE(limiter.consume(5000));
}

TEST(RateLimiter, Update_ZeroSizedBucketRemovesTheLimit) {
    ManualClock clock;
    RateLimitConfig config;
    config.ops = TokenBucketConfig { .size = 1, .one_time_burst = 0, .refill_time_ms = 1000 };
    auto limiter = MUST(RateLimiter::create(config, clock));
    ASSERT_TRUE(limiter.consume(0));
    RateLimitConfig changes;
    changes.ops = TokenBucketConfig { .size = 0, .one_time_burst = 0, .refill_time_ms = 0 };
    MUST(limiter.update(changes));
    EXPECT_TRUE(limiter.is_unlimited());
    for (int i = 0; i < 100; ++i)
        ASSERT_TRUE(limiter.consume(1 << 20));
}

TEST(RateLimiter, Update_InvalidBucketChangesNothing) {
    ManualClock clock;
    RateLimitConfig config;
    config.ops = TokenBucketConfig { .size = 1, .one_time_burst = 0, .refill_time_ms = 1000 };
    auto limiter = MUST(RateLimiter::create(config, clock));
    RateLimitConfig changes;
    changes.bandwidth = TokenBucketConfig { .size = 100, .one_time_burst = 0, .refill_time_ms = 1000 };
    changes.ops = TokenBucketConfig { .size = 10, .one_time_burst = 0, .refill_time_ms = ~0ull };
    auto updated = limiter.update(changes);
    ASSERT_FALSE(updated.has_value());
    EXPECT_NE(updated.error().message().find("ops bucket"), std::string::npos);
    // Still one op per second and no bandwidth limit.
    EXPECT_TRUE(limiter.consume(1 << 20));
    EXPECT_FALSE(limiter.consume(1));
}

TEST(RateLimiter, Update_WhileBlocked_FiresTheTimerAtOnce) {
    ManualClock clock;
    RateLimitConfig config;
    config.bandwidth = TokenBucketConfig { .size = 1000, .one_time_burst = 0, .refill_time_ms = 60000 };
    auto limiter = MUST(RateLimiter::create(config, clock));
    ASSERT_TRUE(limiter.consume(1000));
    ASSERT_FALSE(limiter.consume(1000));
    EXPECT_EQ(limiter.last_timer_delay(), seconds(60));
    RateLimitConfig changes;
    changes.bandwidth = TokenBucketConfig { .size = 0, .one_time_burst = 0, .refill_time_ms = 0 };
    MUST(limiter.update(changes));
    // Still blocked until the device's timer callback runs, which is due now, not in a minute.
    EXPECT_TRUE(limiter.is_blocked());
    pollfd wait { .fd = limiter.timer_fd(), .events = POLLIN, .revents = 0 };
    ASSERT_EQ(::poll(&wait, 1, 1000), 1);
    limiter.on_timer();
    EXPECT_TRUE(limiter.consume(1000));
}

TEST(RateLimiter, Bandwidth_IsWithinOnePercentOfTheConfiguredRate) {
    ManualClock clock;
    RateLimitConfig config;
    // 1 MiB per 100 ms, 4 KiB requests, driven by the limiter's own timer delays.
    config.bandwidth = TokenBucketConfig { .size = 1 << 20, .one_time_burst = 0, .refill_time_ms = 100 };
    config.ops = TokenBucketConfig { .size = 1000, .one_time_burst = 0, .refill_time_ms = 100 };
    auto limiter = MUST(RateLimiter::create(config, clock));
    auto const start = clock.now();
    uint64_t bytes = 0;
    uint64_t ops = 0;
    while (clock.now() - start < seconds(10)) {
        if (limiter.consume(4096)) {
            bytes += 4096;
            ++ops;
            continue;
        }
        clock.advance(limiter.last_timer_delay());
        limiter.on_timer();
    }
    double const expected_bytes = 10.0 * 10 * (1 << 20) + (1 << 20);
    EXPECT_NEAR(static_cast<double>(bytes), expected_bytes, expected_bytes * 0.01);
    // 256 requests per 100 ms fit the bandwidth, well under the ops limit.
    EXPECT_LT(ops, 10u * 10 * 1000);
}

TEST(RateLimiter, Ops_IsWithinOnePercentOfTheConfiguredRate) {
    ManualClock clock;
    RateLimitConfig config;
    config.ops = TokenBucketConfig { .size = 100, .one_time_burst = 0, .refill_time_ms = 1000 };
    auto limiter = MUST(RateLimiter::create(config, clock));
    auto const start = clock.now();
    uint64_t ops = 0;
    while (clock.now() - start < seconds(100)) {
        if (limiter.consume(512)) {
            ++ops;
            continue;
        }
        clock.advance(limiter.last_timer_delay());
        limiter.on_timer();
    }
    double const expected = 100.0 * 100 + 100;
    EXPECT_NEAR(static_cast<double>(ops), expected, expected * 0.01);
}

RateLimitConfig bandwidth_and_ops() {
    RateLimitConfig config;
    config.bandwidth = TokenBucketConfig { .size = 1000, .one_time_burst = 0, .refill_time_ms = 1000 };
    config.ops = TokenBucketConfig { .size = 2, .one_time_burst = 0, .refill_time_ms = 1000 };
    return config;
}

TEST(RateLimiterState, RestoredBlockedLimiter_FiresAtOnceAndThenLimitsAsTheOriginal) {
    ManualClock here;
    auto original = MUST(RateLimiter::create(bandwidth_and_ops(), here));
    ASSERT_TRUE(original.consume(400));
    ASSERT_TRUE(original.consume(400));
    ASSERT_FALSE(original.consume(100)); // out of ops: blocked for 500 ms
    auto const saved = original.save();
    ASSERT_TRUE(saved.bandwidth && saved.ops);
    EXPECT_TRUE(saved.blocked);
    EXPECT_EQ(saved.ops->budget, 0);
    EXPECT_EQ(saved.bandwidth->budget, 200);

    ManualClock there;
    there.advance(hours(100));
    auto copy = MUST(RateLimiter::create(bandwidth_and_ops(), there));
    auto const decoded = testing::round_trip(saved);
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(*decoded, saved);
    auto const restored = copy.restore(*decoded);
    ASSERT_TRUE(restored) << restored.error().message();
    EXPECT_EQ(copy.save(), saved);
    EXPECT_TRUE(copy.is_blocked());
    EXPECT_FALSE(copy.consume(1)) << "blocked until the timer";
    // The restored timer fires at once (well within a second on a loaded host).
    pollfd wait { .fd = copy.timer_fd(), .events = POLLIN, .revents = 0 };
    ASSERT_EQ(::poll(&wait, 1, 1000), 1);
    copy.on_timer();
    // The retry finds the ops bucket as empty as the original's and blocks for the same wait.
    EXPECT_FALSE(copy.consume(100));
    EXPECT_EQ(copy.last_timer_delay(), original.last_timer_delay());
    copy.on_timer();
    here.advance(milliseconds(500));
    there.advance(milliseconds(500));
    original.on_timer();
    EXPECT_TRUE(original.consume(700));
    EXPECT_TRUE(copy.consume(700));
    EXPECT_EQ(copy.save(), original.save());
}

TEST(RateLimiterState, RestoringAnUnblockedState_DisarmsABlockedLimiter) {
    ManualClock clock;
    auto limiter = MUST(RateLimiter::create(bandwidth_and_ops(), clock));
    auto const fresh = limiter.save();
    ASSERT_TRUE(limiter.consume(1000));
    ASSERT_FALSE(limiter.consume(1));
    ASSERT_GT(armed_time_left(limiter.timer_fd()), nanoseconds(0));
    ASSERT_TRUE(limiter.restore(fresh));
    EXPECT_FALSE(limiter.is_blocked());
    EXPECT_EQ(armed_time_left(limiter.timer_fd()), nanoseconds(0));
    EXPECT_TRUE(limiter.consume(1000));
}

TEST(RateLimiterState, RestoreRefusesAnotherSetOfBucketsOrABadBucketAndChangesNothing) {
    ManualClock clock;
    RateLimitConfig ops_only;
    ops_only.ops = bandwidth_and_ops().ops;
    auto limiter = MUST(RateLimiter::create(ops_only, clock));
    ASSERT_TRUE(limiter.consume(0));
    auto const before = limiter.save();
    auto refused = [&](RateLimiterState const& state) {
        auto const result = limiter.restore(state);
        EXPECT_EQ(limiter.save(), before);
        return result ? std::string("accepted") : result.error().message();
    };
    auto other = MUST(RateLimiter::create(bandwidth_and_ops(), clock));
    EXPECT_NE(refused(other.save()).find("bandwidth: saved with a bucket, but this limiter has none"),
              std::string::npos);
    EXPECT_NE(refused(RateLimiterState {}).find("ops: saved without a bucket, but this limiter has one"),
              std::string::npos);
    auto state = before;
    state.ops->budget = 3;
    EXPECT_NE(refused(state).find("ops: token bucket state: budget 3 is outside"), std::string::npos);

    auto unlimited = MUST(RateLimiter::create(RateLimitConfig {}, clock));
    RateLimiterState blocked;
    blocked.blocked = true;
    auto const never = unlimited.restore(blocked);
    ASSERT_FALSE(never);
    EXPECT_NE(never.error().message().find("blocked: a limiter without buckets never blocks"), std::string::npos)
        << never.error().message();
    EXPECT_FALSE(unlimited.is_blocked());
}

TEST(RateLimiterState, DecodeNamesTheBucketOfATruncatedOrNewerSection) {
    ManualClock clock;
    auto limiter = MUST(RateLimiter::create(bandwidth_and_ops(), clock));
    StateWriter writer;
    writer.begin_section(RateLimiterState::SECTION, RateLimiterState::VERSION);
    writer.boolean(true);
    limiter.save().bandwidth->encode(writer);
    writer.boolean(true);
    writer.begin_section(TokenBucketState::SECTION, TokenBucketState::VERSION);
    writer.u64(2);
    writer.end_section();
    writer.end_section();
    auto const truncated = testing::decode_payload<RateLimiterState>(writer.payload());
    ASSERT_FALSE(truncated);
    EXPECT_NE(truncated.error().message().find("ops: saved state rate-limiter/token-bucket/one_time_burst: truncated"),
              std::string::npos)
        << truncated.error().message();

    StateWriter newer;
    newer.begin_section(RateLimiterState::SECTION, RateLimiterState::VERSION);
    newer.boolean(true);
    newer.begin_section(TokenBucketState::SECTION, TokenBucketState::VERSION + 1);
    newer.end_section();
    newer.end_section();
    auto const version = testing::decode_payload<RateLimiterState>(newer.payload());
    ASSERT_FALSE(version);
    EXPECT_NE(version.error().message().find("bandwidth: saved state rate-limiter/token-bucket (section): version 2"),
              std::string::npos)
        << version.error().message();
}

} // namespace
} // namespace kvmm

#include "base/token_bucket.h"

#include "base/testing/manual_clock.h"
#include "base/testing/state_round_trip.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace kvmm {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using testing::ManualClock;

TEST(TokenBucket, ZeroSizeOrRefillTime_IsRejectedWithTheField) {
    ManualClock clock;
    auto no_size = TokenBucket::create({ .size = 0, .one_time_burst = 0, .refill_time_ms = 10 }, clock);
    ASSERT_FALSE(no_size.has_value());
    EXPECT_NE(no_size.error().message().find("size"), std::string::npos);
    auto no_refill = TokenBucket::create({ .size = 10, .one_time_burst = 0, .refill_time_ms = 0 }, clock);
    ASSERT_FALSE(no_refill.has_value());
    EXPECT_NE(no_refill.error().message().find("refill_time_ms"), std::string::npos);
    auto huge_refill = TokenBucket::create({ .size = 10, .one_time_burst = 0, .refill_time_ms = ~0ull }, clock);
    ASSERT_FALSE(huge_refill.has_value());
    EXPECT_NE(huge_refill.error().message().find("18446744073709551615"), std::string::npos);
}

TEST(TokenBucket, FullBucket_GivesItsSizeThenRefuses) {
    ManualClock clock;
    auto bucket = MUST(TokenBucket::create({ .size = 100, .one_time_burst = 0, .refill_time_ms = 1000 }, clock));
    EXPECT_EQ(bucket.available(), 100u);
    EXPECT_TRUE(bucket.consume(60));
    EXPECT_FALSE(bucket.consume(41));
    EXPECT_EQ(bucket.available(), 40u); // the refused request took nothing
    EXPECT_TRUE(bucket.consume(40));
    EXPECT_FALSE(bucket.consume(1));
    EXPECT_TRUE(bucket.consume(0));
}

TEST(TokenBucket, Refill_IsLinearAndCappedAtSize) {
    ManualClock clock;
    auto bucket = MUST(TokenBucket::create({ .size = 100, .one_time_burst = 0, .refill_time_ms = 1000 }, clock));
    ASSERT_TRUE(bucket.consume(100));
    clock.advance(milliseconds(250));
    EXPECT_EQ(bucket.available(), 25u);
    clock.advance(milliseconds(250));
    EXPECT_FALSE(bucket.consume(51));
    EXPECT_TRUE(bucket.consume(50));
    clock.advance(seconds(30));
    EXPECT_EQ(bucket.available(), 100u);
}

TEST(TokenBucket, FrequentPolling_LosesNoFractionOfAToken) {
    ManualClock clock;
    // 3 tokens per second: each 1 ms poll earns 0.003 of a token.
    auto bucket = MUST(TokenBucket::create({ .size = 3, .one_time_burst = 0, .refill_time_ms = 1000 }, clock));
    ASSERT_TRUE(bucket.consume(3));
    for (int step = 1; step <= 1000; ++step) {
        clock.advance(milliseconds(1));
        // One token is complete at 333.33 ms, the second at 666.67 ms, the third at 1000 ms.
        EXPECT_EQ(bucket.available(), static_cast<uint64_t>(step * 3 / 1000)) << "at " << step << " ms";
    }
}

TEST(TokenBucket, OneTimeBurst_IsSpentFirstAndNeverRefilled) {
    ManualClock clock;
    auto bucket = MUST(TokenBucket::create({ .size = 100, .one_time_burst = 50, .refill_time_ms = 1000 }, clock));
    EXPECT_EQ(bucket.available(), 150u);
    EXPECT_TRUE(bucket.consume(30));
    EXPECT_EQ(bucket.one_time_burst(), 20u);
    EXPECT_EQ(bucket.available(), 120u);
    EXPECT_TRUE(bucket.consume(70)); // 20 from the burst, 50 from the budget
    EXPECT_EQ(bucket.one_time_burst(), 0u);
    clock.advance(seconds(10));
    EXPECT_EQ(bucket.available(), 100u);
}

TEST(TokenBucket, OversizedRequest_PassesOnAFullBucketAndIsPaidBack) {
    ManualClock clock;
    auto bucket = MUST(TokenBucket::create({ .size = 100, .one_time_burst = 0, .refill_time_ms = 1000 }, clock));
    ASSERT_TRUE(bucket.consume(1));
    EXPECT_FALSE(bucket.consume(250)); // not full: refused
    clock.advance(milliseconds(10));   // one token back: full again
    EXPECT_TRUE(bucket.consume(250));
    EXPECT_EQ(bucket.available(), 0u);
    // 150 tokens of debt plus the one wanted: 1.51 s.
    EXPECT_EQ(bucket.time_until(1), milliseconds(1510));
    clock.advance(milliseconds(1509));
    EXPECT_FALSE(bucket.consume(1));
    clock.advance(milliseconds(1));
    EXPECT_TRUE(bucket.consume(1));
}

TEST(TokenBucket, TimeUntil_IsNeverEarlyAndNeverLate) {
    ManualClock clock;
    // 7 tokens per 3 ms: the waits are not whole nanoseconds, so rounding matters.
    auto bucket = MUST(TokenBucket::create({ .size = 7, .one_time_burst = 0, .refill_time_ms = 3 }, clock));
    ASSERT_TRUE(bucket.consume(7));
    for (uint64_t tokens : { 1u, 2u, 5u, 7u, 20u }) {
        auto const wait = bucket.time_until(tokens);
        ASSERT_GT(wait.count(), 0) << tokens;
        clock.advance(wait - nanoseconds(1));
        EXPECT_FALSE(bucket.consume(tokens)) << tokens;
        clock.advance(nanoseconds(1));
        EXPECT_EQ(bucket.time_until(tokens), nanoseconds(0)) << tokens;
        EXPECT_TRUE(bucket.consume(tokens)) << tokens;
    }
}

TEST(TokenBucket, LongRunRate_IsWithinOnePercentOfTheConfiguredRate) {
    ManualClock clock;
    // 1000 tokens per 100 ms = 10000 per second; requests of 37 tokens, taken as soon as they fit.
    auto bucket = MUST(TokenBucket::create({ .size = 1000, .one_time_burst = 0, .refill_time_ms = 100 }, clock));
    auto const start = clock.now();
    uint64_t consumed = 0;
    while (clock.now() - start < seconds(10)) {
        if (bucket.consume(37))
            consumed += 37;
        else
            clock.advance(bucket.time_until(37));
    }
    double const expected = 10000.0 * 10 + 1000; // the rate over 10 s plus the initially full bucket
    EXPECT_NEAR(static_cast<double>(consumed), expected, expected * 0.01);
}

using std::chrono::hours;

constexpr TokenBucketConfig HUNDRED_PER_SECOND { .size = 100, .one_time_burst = 0, .refill_time_ms = 1000 };

TokenBucketState restore_copy(TokenBucket const& original, TokenBucket& fresh) {
    auto const saved = original.save();
    auto const decoded = testing::round_trip(saved);
    EXPECT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(*decoded, saved);
    auto const restored = fresh.restore(*decoded);
    EXPECT_TRUE(restored) << restored.error().message();
    EXPECT_EQ(fresh.save(), saved);
    return saved;
}

TEST(TokenBucketState, RestoredOnAClockWithAnotherOrigin_RefillsExactlyAsTheOriginal) {
    ManualClock here;
    auto original = MUST(TokenBucket::create(HUNDRED_PER_SECOND, here));
    ASSERT_TRUE(original.consume(250)); // oversized on a full bucket: 150 tokens of debt
    here.advance(nanoseconds(1'500'000));
    EXPECT_EQ(original.available(), 0u); // refilled: 0.15 of a token carried
    here.advance(milliseconds(200));     // and 200 ms since that refill

    // Another host: its monotonic clock is ten days further from its origin.
    ManualClock there;
    there.advance(hours(240));
    auto copy = MUST(TokenBucket::create(HUNDRED_PER_SECOND, there));
    auto const saved = restore_copy(original, copy);
    EXPECT_EQ(saved.budget, -150);
    EXPECT_EQ(saved.fraction, 150'000'000u);
    EXPECT_EQ(saved.since_last_refill_ns, 200'000'000u);

    EXPECT_EQ(copy.time_until(1), original.time_until(1));
    for (int step = 0; step < 30; ++step) {
        here.advance(milliseconds(70));
        there.advance(milliseconds(70));
        ASSERT_EQ(copy.available(), original.available()) << "step " << step;
        ASSERT_EQ(copy.time_until(40), original.time_until(40)) << "step " << step;
        ASSERT_EQ(copy.consume(7), original.consume(7)) << "step " << step;
    }
}

TEST(TokenBucketState, RestoredBurst_IsSpentFirstAsBefore) {
    ManualClock clock;
    TokenBucketConfig const config { .size = 10, .one_time_burst = 50, .refill_time_ms = 100 };
    auto original = MUST(TokenBucket::create(config, clock));
    ASSERT_TRUE(original.consume(30));
    auto copy = MUST(TokenBucket::create(config, clock));
    auto const saved = restore_copy(original, copy);
    EXPECT_EQ(saved.one_time_burst_left, 20u);
    EXPECT_EQ(copy.one_time_burst(), 20u);
    EXPECT_EQ(copy.consume(25), original.consume(25));
    EXPECT_EQ(copy.available(), original.available());
    EXPECT_EQ(copy.available(), 5u);
}

TEST(TokenBucketState, AnIntervalLongerThanTheClocksAge_IsCappedNotOverflowed) {
    ManualClock clock; // 1000 s after its origin
    auto bucket = MUST(TokenBucket::create(HUNDRED_PER_SECOND, clock));
    auto state = bucket.save();
    state.budget = -150;
    state.since_last_refill_ns = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    ASSERT_TRUE(bucket.restore(state));
    EXPECT_EQ(bucket.save(), state);
    clock.advance(seconds(1));
    EXPECT_EQ(bucket.available(), 100u) << "292 years pay back 150 tokens of debt";

    // The largest debt is not paid back in 292 years at 100 tokens per second: still waiting.
    state.budget = -std::numeric_limits<int64_t>::max();
    ASSERT_TRUE(bucket.restore(state));
    EXPECT_EQ(bucket.available(), 0u);
    EXPECT_GT(bucket.time_until(1), hours(24 * 365));
}

TEST(TokenBucketState, ADeepDebtPaidBackByMoreThanInt64MaxTokens_StaysInRange) {
    // A bucket of 2^63 - 1 tokens refilled every millisecond, in the deepest debt a state can
    // hold: a few milliseconds earn more than INT64_MAX tokens, still less than the debt.
    ManualClock clock;
    TokenBucketConfig const huge { .size = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                                   .one_time_burst = 0,
                                   .refill_time_ms = 1 };
    auto bucket = MUST(TokenBucket::create(huge, clock));
    auto state = bucket.save();
    state.budget = -std::numeric_limits<int64_t>::max();
    ASSERT_TRUE(bucket.restore(state));
    clock.advance(nanoseconds(1'500'000));
    EXPECT_EQ(bucket.available(), static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / 2))
        << "1.5 refill times earn 1.5 buckets; one pays the debt back, the half is left";
    clock.advance(seconds(1));
    EXPECT_EQ(bucket.available(), huge.size);
}

TEST(TokenBucketState, RestoreRefusesAnotherConfigurationOrOutOfRangeValuesAndChangesNothing) {
    ManualClock clock;
    auto bucket = MUST(TokenBucket::create({ .size = 100, .one_time_burst = 10, .refill_time_ms = 1000 }, clock));
    ASSERT_TRUE(bucket.consume(30));
    auto const before = bucket.save();
    auto refused = [&](TokenBucketState const& state) {
        auto const result = bucket.restore(state);
        EXPECT_EQ(bucket.save(), before);
        return result ? std::string("accepted") : result.error().message();
    };
    auto state = before;
    state.config.size = 200;
    EXPECT_NE(refused(state).find("config (size 200, one_time_burst 10, refill_time_ms 1000) is not this bucket's "
                                  "(size 100, one_time_burst 10, refill_time_ms 1000)"),
              std::string::npos);
    state = before;
    state.budget = 101;
    EXPECT_NE(refused(state).find("budget 101 is outside [-9223372036854775807, 100]"), std::string::npos);
    state.budget = std::numeric_limits<int64_t>::min();
    EXPECT_NE(refused(state).find("budget -9223372036854775808 is outside"), std::string::npos);
    state = before;
    state.one_time_burst_left = 11;
    EXPECT_NE(refused(state).find("one_time_burst_left 11 is more than the one_time_burst 10"), std::string::npos);
    state = before;
    state.fraction = 1'000'000'000;
    EXPECT_NE(refused(state).find("fraction 1000000000 is not below the refill time of 1000000000 ns"),
              std::string::npos);
    state = before;
    state.since_last_refill_ns = 1ull << 63;
    EXPECT_NE(refused(state).find("since_last_refill_ns 9223372036854775808 is more than"), std::string::npos);
    EXPECT_EQ(bucket.available(), 80u);
}

TEST(TokenBucketState, DecodeRefusesATruncatedSectionAndAWrongVersion) {
    StateWriter short_body;
    short_body.begin_section(TokenBucketState::SECTION, TokenBucketState::VERSION);
    for (int field = 0; field < 5; ++field)
        short_body.u64(1);
    short_body.end_section();
    auto const truncated = testing::decode_payload<TokenBucketState>(short_body.payload());
    ASSERT_FALSE(truncated);
    EXPECT_NE(truncated.error().message().find("token-bucket/fraction: truncated"), std::string::npos)
        << truncated.error().message();
    StateWriter newer;
    newer.begin_section(TokenBucketState::SECTION, 3);
    newer.end_section();
    auto const version = testing::decode_payload<TokenBucketState>(newer.payload());
    ASSERT_FALSE(version);
    EXPECT_NE(version.error().message().find("token-bucket (section): version 3 is not one this kvmm reads"),
              std::string::npos)
        << version.error().message();
}

} // namespace
} // namespace kvmm

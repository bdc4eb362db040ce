#include "base/token_bucket.h"

#include "base/testing/manual_clock.h"

#include <gtest/gtest.h>

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

} // namespace
} // namespace kvmm

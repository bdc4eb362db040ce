// Test support: a Clock (base/token_bucket.h) that moves only when the test says so, for
// deterministic tests of whatever takes its time from a Clock (token buckets, rate limiters,
// rate-limited logging).
//
// Threading: not synchronised; advance it from the test's thread while nothing else reads it.
#pragma once

#include "base/token_bucket.h"

#include <chrono>

namespace kvmm::testing {

class ManualClock final : public Clock {
public:
    std::chrono::nanoseconds now() const override { return m_now; }
    void advance(std::chrono::nanoseconds step) { m_now += step; }

private:
    // Far from zero, so that code that subtracts an interval from "now" never sees a negative time.
    std::chrono::nanoseconds m_now { std::chrono::seconds(1000) };
};

} // namespace kvmm::testing

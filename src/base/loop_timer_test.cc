#include "base/loop_timer.h"

#include <gtest/gtest.h>

#include <thread>

namespace kvmm {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Runs the loop until `done` or `limit` passes; the limit is generous for a loaded machine.
void run_until(EventLoop& loop, std::function<bool()> const& done, std::chrono::milliseconds limit = 5s) {
    auto const deadline = Clock::now() + limit;
    while (!done() && Clock::now() < deadline)
        MUST(loop.run_once(10ms));
}

TEST(LoopTimer, OneShotFiresOnceAfterItsDelay) {
    auto loop = MUST(EventLoop::create());
    int expiries = 0;
    auto timer = MUST(LoopTimer::create(loop, [&] { ++expiries; }));
    EXPECT_FALSE(timer.is_armed());
    auto const armed_at = Clock::now();
    MUST(timer.arm(20ms));
    EXPECT_TRUE(timer.is_armed());
    run_until(loop, [&] { return expiries > 0; });
    EXPECT_GE(Clock::now() - armed_at, 20ms);
    EXPECT_EQ(expiries, 1);
    EXPECT_FALSE(timer.is_armed());
    for (int turn = 0; turn < 5; ++turn)
        MUST(loop.run_once(10ms));
    EXPECT_EQ(expiries, 1);
}

TEST(LoopTimer, PeriodicFiresRepeatedlyUntilDisarmed) {
    auto loop = MUST(EventLoop::create());
    int expiries = 0;
    auto timer = MUST(LoopTimer::create(loop, [&] { ++expiries; }));
    MUST(timer.arm_periodic(5ms));
    run_until(loop, [&] { return expiries >= 3; });
    EXPECT_GE(expiries, 3);
    timer.disarm();
    EXPECT_FALSE(timer.is_armed());
    int const at_disarm = expiries;
    for (int turn = 0; turn < 5; ++turn)
        MUST(loop.run_once(10ms));
    EXPECT_EQ(expiries, at_disarm);
}

TEST(LoopTimer, ExpiryNotYetDispatchedIsDroppedByDisarm) {
    auto loop = MUST(EventLoop::create());
    int expiries = 0;
    auto timer = MUST(LoopTimer::create(loop, [&] { ++expiries; }));
    MUST(timer.arm(1ms));
    std::this_thread::sleep_for(20ms); // expired, but the loop has not run
    timer.disarm();
    EXPECT_EQ(MUST(loop.run_once(0ms)), 0);
    EXPECT_EQ(expiries, 0);
}

TEST(LoopTimer, DestroyedTimerLeavesTheLoop) {
    auto loop = MUST(EventLoop::create());
    int expiries = 0;
    {
        auto timer = MUST(LoopTimer::create(loop, [&] { ++expiries; }));
        MUST(timer.arm_periodic(1ms));
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(MUST(loop.run_once(20ms)), 0);
    EXPECT_EQ(expiries, 0);
}

TEST(LoopTimer, NegativeDurationsAreRefused) {
    auto loop = MUST(EventLoop::create());
    auto timer = MUST(LoopTimer::create(loop, [] {}));
    EXPECT_FALSE(timer.arm(-1ms));
    EXPECT_FALSE(timer.arm(1ms, -1ms));
}

} // namespace
} // namespace kvmm

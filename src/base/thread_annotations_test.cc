#include "base/thread_annotations.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace kvmm {
namespace {

// A counter whose value another thread waits for, written the way kvmm's classes use the lock.
class Counter {
public:
    void add() {
        MutexLock guard(m_lock);
        ++m_value;
        m_changed.notify_all();
    }
    bool wait_for_value(int value, std::chrono::milliseconds timeout) {
        MutexLock guard(m_lock);
        return guard.wait_for(m_changed, timeout, [&]() REQUIRES(m_lock) { return m_value >= value; });
    }
    bool is_locked_elsewhere() {
        if (!m_lock.try_lock())
            return true;
        m_lock.unlock();
        return false;
    }
    Mutex& lock() { return m_lock; }

private:
    Mutex m_lock;
    std::condition_variable m_changed;
    int m_value GUARDED_BY(m_lock) = 0;
};

TEST(MutexLock, HoldsTheMutexUntilTheEndOfItsScope) {
    Counter counter;
    {
        MutexLock guard(counter.lock());
        std::thread other([&] { EXPECT_TRUE(counter.is_locked_elsewhere()); });
        other.join();
    }
    EXPECT_FALSE(counter.is_locked_elsewhere());
}

TEST(MutexLock, UnlockLetsGoEarlyAndLockTakesItAgain) {
    Counter counter;
    MutexLock guard(counter.lock());
    guard.unlock();
    std::thread([&] { EXPECT_FALSE(counter.is_locked_elsewhere()); }).join();
    guard.lock();
    std::thread([&] { EXPECT_TRUE(counter.is_locked_elsewhere()); }).join();
}

TEST(MutexLock, WaitReleasesTheMutexUntilThePredicateHolds) {
    Counter counter;
    std::thread adder([&] {
        counter.add(); // needs the mutex, which the waiter must have released
        counter.add();
    });
    EXPECT_TRUE(counter.wait_for_value(2, std::chrono::seconds(10)));
    adder.join();
}

TEST(MutexLock, WaitForGivesUpAfterItsTimeout) {
    Counter counter;
    auto const start = std::chrono::steady_clock::now();
    EXPECT_FALSE(counter.wait_for_value(1, std::chrono::milliseconds(20)));
    EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(20));
}

} // namespace
} // namespace kvmm

#include "base/event_loop.h"

#include "base/event_fd.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

TEST(EventLoop, DispatchesReadableEventFdAndTimesOutWhenIdle) {
    auto loop = MUST(EventLoop::create());
    auto event = MUST(EventFd::create());
    int calls = 0;
    MUST(loop.add(event.fd(), [&] {
        ++calls;
        (void)event.consume();
    }));
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 0);
    MUST(event.signal());
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(1000))), 1);
    EXPECT_EQ(calls, 1);
}

TEST(EventLoop, RemovedFdIsNoLongerDispatched) {
    auto loop = MUST(EventLoop::create());
    auto event = MUST(EventFd::create());
    int calls = 0;
    MUST(loop.add(event.fd(), [&] { ++calls; }));
    loop.remove(event.fd());
    MUST(event.signal());
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 0);
    EXPECT_EQ(calls, 0);
}

} // namespace
} // namespace kvmm

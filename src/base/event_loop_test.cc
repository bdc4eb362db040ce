#include "base/event_loop.h"

#include "base/event_fd.h"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

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

TEST(EventLoop, WritableInterestReportsWritableSocket) {
    auto loop = MUST(EventLoop::create());
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    UniqueFd a(pair[0]), b(pair[1]);
    uint32_t seen = 0;
    MUST(loop.add(a.get(), EventLoop::WRITABLE, [&](uint32_t ready) { seen = ready; }));
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 1);
    EXPECT_EQ(seen, EventLoop::WRITABLE);
}

TEST(EventLoop, ModifyChangesTheReportedInterest) {
    auto loop = MUST(EventLoop::create());
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    UniqueFd a(pair[0]), b(pair[1]);
    uint32_t seen = 0;
    MUST(loop.add(a.get(), EventLoop::READABLE, [&](uint32_t ready) { seen |= ready; }));
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 0); // nothing to read yet
    MUST(loop.modify(a.get(), EventLoop::READABLE | EventLoop::WRITABLE));
    ASSERT_EQ(::write(b.get(), "x", 1), 1);
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 1);
    EXPECT_EQ(seen, EventLoop::READABLE | EventLoop::WRITABLE);
}

TEST(EventLoop, ParkedFdIsNotPolledEvenAfterHangUp) {
    auto loop = MUST(EventLoop::create());
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    UniqueFd a(pair[0]), b(pair[1]);
    int calls = 0;
    MUST(loop.add(a.get(), EventLoop::READABLE, [&](uint32_t) { ++calls; }));
    MUST(loop.modify(a.get(), 0));
    b.reset(); // hang-up: epoll would report it for any registered fd
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 0);
    EXPECT_EQ(calls, 0);
    MUST(loop.modify(a.get(), EventLoop::READABLE));
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 1);
    EXPECT_EQ(calls, 1);
}

TEST(EventLoop, ModifyOfUnknownFdAndDoubleAddFail) {
    auto loop = MUST(EventLoop::create());
    auto event = MUST(EventFd::create());
    EXPECT_FALSE(loop.modify(event.fd(), EventLoop::READABLE));
    MUST(loop.add(event.fd(), [] {}));
    EXPECT_FALSE(loop.add(event.fd(), EventLoop::READABLE, [](uint32_t) {}));
}

TEST(EventLoop, RegistrationRemovesItsFdWhenDestroyed) {
    auto loop = MUST(EventLoop::create());
    auto event = MUST(EventFd::create());
    int calls = 0;
    {
        auto registration = MUST(loop.watch(event.fd(), [&] { ++calls; }));
        EXPECT_TRUE(registration.is_active());
        MUST(event.signal());
        EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 1);
    }
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 0); // still readable, no longer watched
    EXPECT_EQ(calls, 1);
    // The fd may be registered again once its registration is gone.
    MUST(loop.add(event.fd(), [&] { ++calls; }));
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 1);
    EXPECT_EQ(calls, 2);
}

TEST(EventLoop, MovedRegistrationKeepsTheFdAndResetEndsIt) {
    auto loop = MUST(EventLoop::create());
    auto event = MUST(EventFd::create());
    int calls = 0;
    EventLoop::Registration kept;
    {
        auto registration = MUST(loop.watch(event.fd(), EventLoop::READABLE, [&](uint32_t) { ++calls; }));
        kept = std::move(registration);
    } // the moved-from registration ends without taking the fd out
    MUST(event.signal());
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 1);
    MUST(kept.modify(0));
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 0);
    MUST(kept.modify(EventLoop::READABLE));
    kept.reset();
    EXPECT_FALSE(kept.is_active());
    EXPECT_FALSE(kept.modify(EventLoop::READABLE));
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 0);
    EXPECT_EQ(calls, 1);
}

TEST(EventLoop, StaleRegistrationDoesNotRemoveALaterRegistrationOfTheSameFd) {
    auto loop = MUST(EventLoop::create());
    auto event = MUST(EventFd::create());
    int first_calls = 0;
    int second_calls = 0;
    auto first = MUST(loop.watch(event.fd(), [&] { ++first_calls; }));
    loop.remove(event.fd()); // through the older API, as a caller that closed and reused the number would
    MUST(loop.add(event.fd(), [&] { ++second_calls; }));
    first.reset();
    MUST(event.signal());
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 1);
    EXPECT_EQ(first_calls, 0);
    EXPECT_EQ(second_calls, 1);
}

TEST(EventLoop, CallbackMayEndItsOwnRegistration) {
    auto loop = MUST(EventLoop::create());
    auto event = MUST(EventFd::create());
    int calls = 0;
    EventLoop::Registration registration;
    registration = MUST(loop.watch(event.fd(), [&] {
        ++calls;
        registration.reset();
    }));
    MUST(event.signal());
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 1);
    EXPECT_EQ(MUST(loop.run_once(std::chrono::milliseconds(0))), 0);
    EXPECT_EQ(calls, 1);
}

TEST(EventLoop, RegistrationOutlivingItsLoopIsHarmless) {
    auto event = MUST(EventFd::create());
    EventLoop::Registration registration;
    {
        auto loop = MUST(EventLoop::create());
        registration = MUST(loop.watch(event.fd(), [] {}));
        auto moved = std::move(loop); // the registration follows a moved loop
        EXPECT_TRUE(registration.is_active());
    }
    EXPECT_FALSE(registration.is_active());
    registration.reset();
}

} // namespace
} // namespace kvmm

// LoopTimer: a timerfd on an EventLoop that calls its callback when it expires, once or
// periodically. The loop's way to do timed work without a thread of its own.
//
// A periodic timer that expired several times before the loop got to it (a slow callback, a
// suspended host) calls its callback once; the missed expirations are not made up.
//
// Threading: created, armed, disarmed and destroyed on the loop's thread, where the callback
// runs. The loop must outlive the timer's use (a timer that outlives it is merely inert).
#pragma once

#include "base/event_loop.h"
#include "base/expected.h"
#include "base/unique_fd.h"

#include <chrono>
#include <functional>

namespace kvmm {

class LoopTimer {
public:
    // Created disarmed.
    static Expected<LoopTimer> create(EventLoop& loop, std::function<void()> on_expiry);

    // First expiry after `delay`, then every `period` (zero: once). A zero delay is taken as the
    // shortest one, since timerfd reads zero as "disarm". Replaces any earlier setting.
    Expected<void> arm(std::chrono::nanoseconds delay, std::chrono::nanoseconds period = {});
    Expected<void> arm_periodic(std::chrono::nanoseconds period) { return arm(period, period); }
    void disarm();
    bool is_armed() const;

private:
    LoopTimer(UniqueFd timer, EventLoop::Registration registration)
        : m_timer(std::move(timer)), m_registration(std::move(registration)) {}

    UniqueFd m_timer;
    EventLoop::Registration m_registration; // after m_timer: leaves the loop before the fd closes
};

} // namespace kvmm

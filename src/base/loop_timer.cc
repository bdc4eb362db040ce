#include "base/loop_timer.h"

#include <cerrno>
#include <cstdint>
#include <sys/timerfd.h>
#include <unistd.h>

namespace kvmm {

namespace {

timespec to_timespec(std::chrono::nanoseconds duration) {
    auto const seconds = std::chrono::duration_cast<std::chrono::seconds>(duration);
    return timespec { .tv_sec = static_cast<time_t>(seconds.count()),
                      .tv_nsec = static_cast<long>((duration - seconds).count()) };
}

} // namespace

Expected<LoopTimer> LoopTimer::create(EventLoop& loop, std::function<void()> on_expiry) {
    UniqueFd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (!timer.is_valid())
        return Error::from_errno("timerfd_create");
    // The callback holds the fd number only: the registration ends before the fd is closed.
    auto registration = TRY(loop.watch(timer.get(), [fd = timer.get(), callback = std::move(on_expiry)] {
        uint64_t expirations = 0;
        // EAGAIN: re-armed or disarmed since epoll reported it; nothing expired after all.
        if (::read(fd, &expirations, sizeof(expirations)) != static_cast<ssize_t>(sizeof(expirations)))
            return;
        callback();
    }));
    return LoopTimer(std::move(timer), std::move(registration));
}

Expected<void> LoopTimer::arm(std::chrono::nanoseconds delay, std::chrono::nanoseconds period) {
    if (delay.count() < 0 || period.count() < 0)
        return Error::format("timer delay {} ns and period {} ns must not be negative", delay.count(), period.count());
    itimerspec setting {};
    setting.it_value = to_timespec(delay.count() == 0 ? std::chrono::nanoseconds(1) : delay);
    setting.it_interval = to_timespec(period);
    if (::timerfd_settime(m_timer.get(), 0, &setting, nullptr) != 0)
        return Error::from_errno("timerfd_settime");
    return {};
}

void LoopTimer::disarm() {
    // Setting the timer also clears an expiry counted but not yet read, so none is reported.
    itimerspec const setting {};
    (void)::timerfd_settime(m_timer.get(), 0, &setting, nullptr);
}

bool LoopTimer::is_armed() const {
    itimerspec current {};
    if (::timerfd_gettime(m_timer.get(), &current) != 0)
        return false;
    return current.it_value.tv_sec != 0 || current.it_value.tv_nsec != 0;
}

} // namespace kvmm

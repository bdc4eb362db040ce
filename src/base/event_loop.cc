#include "base/event_loop.h"

#include <array>
#include <cerrno>
#include <sys/epoll.h>
#include <vector>

namespace kvmm {

Expected<EventLoop> EventLoop::create() {
    int fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0)
        return Error::from_errno("epoll_create1");
    return EventLoop(UniqueFd(fd));
}

namespace {

uint32_t to_epoll(uint32_t events) {
    return ((events & EventLoop::READABLE) ? uint32_t { EPOLLIN } : 0u) |
           ((events & EventLoop::WRITABLE) ? uint32_t { EPOLLOUT } : 0u);
}

} // namespace

Expected<void> EventLoop::add(int fd, std::function<void()> on_readable) {
    return add(fd, READABLE, [callback = std::move(on_readable)](uint32_t) { callback(); });
}

Expected<void> EventLoop::add(int fd, uint32_t events, std::function<void(uint32_t ready)> on_ready) {
    if (m_watches.contains(fd))
        return Error::format("epoll_ctl add fd {}: already registered", fd);
    TRY(apply_interest(fd, 0, events));
    m_watches[fd] = Watch { events, std::move(on_ready) };
    return {};
}

Expected<void> EventLoop::modify(int fd, uint32_t events) {
    auto found = m_watches.find(fd);
    if (found == m_watches.end())
        return Error::format("epoll_ctl modify fd {}: not registered", fd);
    TRY(apply_interest(fd, found->second.events, events));
    found->second.events = events;
    return {};
}

Expected<void> EventLoop::apply_interest(int fd, uint32_t old_events, uint32_t new_events) {
    if (old_events == new_events)
        return {};
    epoll_event event {};
    event.events = to_epoll(new_events);
    event.data.fd = fd;
    // A parked fd (no interest) is not in the epoll set at all; see add().
    int const operation = old_events == 0 ? EPOLL_CTL_ADD : new_events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (::epoll_ctl(m_epoll.get(), operation, fd, &event) != 0)
        return Error::from_errno(fmt::format("epoll_ctl fd {} interest {:#x}", fd, new_events));
    return {};
}

void EventLoop::remove(int fd) {
    auto found = m_watches.find(fd);
    if (found == m_watches.end())
        return;
    if (found->second.events != 0)
        ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
    m_watches.erase(found);
}

Expected<int> EventLoop::run_once(std::chrono::milliseconds timeout) {
    std::array<epoll_event, 16> events {};
    int const ready =
        ::epoll_wait(m_epoll.get(), events.data(), static_cast<int>(events.size()), static_cast<int>(timeout.count()));
    if (ready < 0) {
        if (errno == EINTR)
            return 0;
        return Error::from_errno("epoll_wait");
    }
    int dispatched = 0;
    for (int i = 0; i < ready; ++i) {
        // A callback may remove other fds; look each one up afresh.
        epoll_event const& event = events[static_cast<size_t>(i)];
        auto found = m_watches.find(event.data.fd);
        if (found == m_watches.end() || found->second.events == 0)
            continue;
        uint32_t const interest = found->second.events;
        uint32_t ready_events =
            ((event.events & EPOLLIN) ? READABLE : 0u) | ((event.events & EPOLLOUT) ? WRITABLE : 0u);
        if (event.events & (EPOLLHUP | EPOLLERR))
            ready_events |= interest;
        ready_events &= interest;
        if (ready_events == 0)
            continue;                           // the interest changed earlier in this round
        auto callback = found->second.callback; // copy: the callback may remove itself
        callback(ready_events);
        ++dispatched;
    }
    return dispatched;
}

} // namespace kvmm

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

Expected<void> EventLoop::add(int fd, std::function<void()> on_readable) {
    epoll_event event {};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &event) != 0)
        return Error::from_errno(fmt::format("epoll_ctl add fd {}", fd));
    m_callbacks[fd] = std::move(on_readable);
    return {};
}

void EventLoop::remove(int fd) {
    ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
    m_callbacks.erase(fd);
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
        auto found = m_callbacks.find(events[static_cast<size_t>(i)].data.fd);
        if (found == m_callbacks.end())
            continue;
        auto callback = found->second; // copy: the callback may remove itself
        callback();
        ++dispatched;
    }
    return dispatched;
}

} // namespace kvmm

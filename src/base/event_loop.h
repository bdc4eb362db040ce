// EventLoop: a small epoll loop. Callbacks run on the thread that calls
// run_once(); fds are registered for readability (level-triggered).
//
// Threading: single-threaded; other threads wake it through an EventFd that
// is itself registered in the loop.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <chrono>
#include <functional>
#include <map>

namespace kvmm {

class EventLoop {
public:
    static Expected<EventLoop> create();

    // Calls `on_readable` whenever `fd` is readable (or hung up/errored). One callback per fd.
    Expected<void> add(int fd, std::function<void()> on_readable);
    void remove(int fd);

    // Waits up to `timeout` (negative: forever) and dispatches what is ready. Returns the number
    // of callbacks run; EINTR counts as zero.
    Expected<int> run_once(std::chrono::milliseconds timeout);

private:
    explicit EventLoop(UniqueFd epoll) : m_epoll(std::move(epoll)) {}

    UniqueFd m_epoll;
    std::map<int, std::function<void()>> m_callbacks;
};

} // namespace kvmm

// EventLoop: a small epoll loop. Callbacks run on the thread that calls
// run_once(); fds are registered for readability (level-triggered), or with an
// interest set (READABLE/WRITABLE) that modify() changes, for backends that
// must wait for a socket to drain.
//
// Threading: single-threaded; other threads wake it through an EventFd that
// is itself registered in the loop.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>

namespace kvmm {

class EventLoop {
public:
    static Expected<EventLoop> create();

    // Calls `on_readable` whenever `fd` is readable (or hung up/errored). One callback per fd.
    Expected<void> add(int fd, std::function<void()> on_readable);
    void remove(int fd);

    // Interest bits for add(fd, events, ...) and modify().
    static constexpr uint32_t READABLE = 1u << 0;
    static constexpr uint32_t WRITABLE = 1u << 1;

    // Calls `on_ready(ready)` while `fd` is ready for any of `events`; `ready` holds the bits
    // that are. A hang-up or error reports every bit of the interest set, so the callback finds
    // out through its next read or write. An empty interest set parks the fd: it is not polled
    // at all (not even for hang-up, which epoll would otherwise report level-triggered forever).
    Expected<void> add(int fd, uint32_t events, std::function<void(uint32_t ready)> on_ready);
    // Replaces the interest set of an fd added with add(); a no-op when it is unchanged.
    Expected<void> modify(int fd, uint32_t events);

    // Waits up to `timeout` (negative: forever) and dispatches what is ready. Returns the number
    // of callbacks run; EINTR counts as zero.
    Expected<int> run_once(std::chrono::milliseconds timeout);

private:
    explicit EventLoop(UniqueFd epoll) : m_epoll(std::move(epoll)) {}

    struct Watch {
        uint32_t events { 0 };
        std::function<void(uint32_t)> callback;
    };

    Expected<void> apply_interest(int fd, uint32_t old_events, uint32_t new_events);

    UniqueFd m_epoll;
    std::map<int, Watch> m_watches;
};

} // namespace kvmm

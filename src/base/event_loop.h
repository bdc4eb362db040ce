// EventLoop: a small epoll loop. Callbacks run on the thread that calls
// run_once(); fds are registered for readability (level-triggered), or with an
// interest set (READABLE/WRITABLE) that modify() changes, for backends that
// must wait for a socket to drain.
//
// Two ways to register an fd: watch() returns a Registration that removes the fd when it is
// destroyed (the form new code uses: a member declared after the fd it watches goes first,
// so an fd is never closed while still registered), and add()/remove(), the older form some
// callers still use. Both share one table; one fd has at most one callback either way.
//
// Threading: single-threaded; other threads wake it through an EventFd that
// is itself registered in the loop. A Registration is used and destroyed on the loop's
// thread too; one that outlives its loop does nothing when it ends.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>

namespace kvmm {

class EventLoop {
    struct State;

public:
    static Expected<EventLoop> create();

    // Interest bits for add(fd, events, ...), watch() and modify().
    static constexpr uint32_t READABLE = 1u << 0;
    static constexpr uint32_t WRITABLE = 1u << 1;

    // An fd's place in the loop, for as long as the Registration lives (move-only). Reset
    // before the fd is closed; a member declared after the fd's owner does that by itself.
    class Registration {
    public:
        Registration() = default;
        ~Registration() { reset(); }
        Registration(Registration&& other) noexcept;
        Registration& operator=(Registration&& other) noexcept;
        Registration(Registration const&) = delete;
        Registration& operator=(Registration const&) = delete;

        // Takes the fd out of the loop now; the callback is not called again.
        void reset();
        bool is_active() const;
        int fd() const { return m_fd; }
        // Replaces the interest set (see add()); an empty set parks the fd.
        Expected<void> modify(uint32_t events);

    private:
        friend class EventLoop;
        Registration(std::weak_ptr<State> state, int fd, uint64_t id) : m_state(std::move(state)), m_fd(fd), m_id(id) {}

        std::weak_ptr<State> m_state;
        int m_fd { -1 };
        uint64_t m_id { 0 }; // which registration of m_fd this is: an fd number is reused
    };

    // Calls `on_readable` while `fd` is readable (or hung up/errored), until the Registration ends.
    Expected<Registration> watch(int fd, std::function<void()> on_readable);
    // Calls `on_ready(ready)` while `fd` is ready for any of `events`, as add() with an interest set.
    Expected<Registration> watch(int fd, uint32_t events, std::function<void(uint32_t ready)> on_ready);

    // Calls `on_readable` whenever `fd` is readable (or hung up/errored). One callback per fd.
    Expected<void> add(int fd, std::function<void()> on_readable);
    void remove(int fd);

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
    explicit EventLoop(std::shared_ptr<State> state) : m_state(std::move(state)) {}

    // Shared with the Registrations (weakly), so that the loop may be moved and a Registration
    // that outlives it is harmless.
    std::shared_ptr<State> m_state;
};

} // namespace kvmm

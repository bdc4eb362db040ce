#include "base/event_loop.h"

#include <array>
#include <cerrno>
#include <sys/epoll.h>
#include <utility>

namespace kvmm {

struct EventLoop::State {
    struct Watch {
        uint32_t events { 0 };
        uint64_t id { 0 };
        std::function<void(uint32_t)> callback;
    };

    explicit State(UniqueFd epoll_fd) : epoll(std::move(epoll_fd)) {}

    Expected<uint64_t> add(int fd, uint32_t events, std::function<void(uint32_t)> callback);
    Expected<void> modify(int fd, uint32_t events);
    Expected<void> apply_interest(int fd, uint32_t old_events, uint32_t new_events);
    void remove(int fd);

    UniqueFd epoll;
    std::map<int, Watch> watches;
    uint64_t next_id { 1 };
};

Expected<EventLoop> EventLoop::create() {
    int fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0)
        return Error::from_errno("epoll_create1");
    return EventLoop(std::make_shared<State>(UniqueFd(fd)));
}

namespace {

uint32_t to_epoll(uint32_t events) {
    return ((events & EventLoop::READABLE) ? uint32_t { EPOLLIN } : 0u) |
           ((events & EventLoop::WRITABLE) ? uint32_t { EPOLLOUT } : 0u);
}

} // namespace

Expected<uint64_t> EventLoop::State::add(int fd, uint32_t events, std::function<void(uint32_t)> callback) {
    if (watches.contains(fd))
        return Error::format("epoll_ctl add fd {}: already registered", fd);
    TRY(apply_interest(fd, 0, events));
    uint64_t const id = next_id++;
    watches[fd] = Watch { events, id, std::move(callback) };
    return id;
}

Expected<void> EventLoop::State::modify(int fd, uint32_t events) {
    auto found = watches.find(fd);
    if (found == watches.end())
        return Error::format("epoll_ctl modify fd {}: not registered", fd);
    TRY(apply_interest(fd, found->second.events, events));
    found->second.events = events;
    return {};
}

Expected<void> EventLoop::State::apply_interest(int fd, uint32_t old_events, uint32_t new_events) {
    if (old_events == new_events)
        return {};
    epoll_event event {};
    event.events = to_epoll(new_events);
    event.data.fd = fd;
    // A parked fd (no interest) is not in the epoll set at all; see add().
    int const operation = old_events == 0 ? EPOLL_CTL_ADD : new_events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (::epoll_ctl(epoll.get(), operation, fd, &event) != 0)
        return Error::from_errno(fmt::format("epoll_ctl fd {} interest {:#x}", fd, new_events));
    return {};
}

void EventLoop::State::remove(int fd) {
    auto found = watches.find(fd);
    if (found == watches.end())
        return;
    if (found->second.events != 0)
        ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
    watches.erase(found);
}

Expected<void> EventLoop::add(int fd, std::function<void()> on_readable) {
    return add(fd, READABLE, [callback = std::move(on_readable)](uint32_t) { callback(); });
}

Expected<void> EventLoop::add(int fd, uint32_t events, std::function<void(uint32_t ready)> on_ready) {
    TRY(m_state->add(fd, events, std::move(on_ready)));
    return {};
}

Expected<void> EventLoop::modify(int fd, uint32_t events) { return m_state->modify(fd, events); }

void EventLoop::remove(int fd) { m_state->remove(fd); }

Expected<EventLoop::Registration> EventLoop::watch(int fd, std::function<void()> on_readable) {
    return watch(fd, READABLE, [callback = std::move(on_readable)](uint32_t) { callback(); });
}

Expected<EventLoop::Registration> EventLoop::watch(int fd, uint32_t events,
                                                   std::function<void(uint32_t ready)> on_ready) {
    uint64_t const id = TRY(m_state->add(fd, events, std::move(on_ready)));
    return Registration(m_state, fd, id);
}

EventLoop::Registration::Registration(Registration&& other) noexcept
    : m_state(std::move(other.m_state)), m_fd(std::exchange(other.m_fd, -1)), m_id(std::exchange(other.m_id, 0)) {}

EventLoop::Registration& EventLoop::Registration::operator=(Registration&& other) noexcept {
    if (this != &other) {
        reset();
        m_state = std::move(other.m_state);
        m_fd = std::exchange(other.m_fd, -1);
        m_id = std::exchange(other.m_id, 0);
    }
    return *this;
}

bool EventLoop::Registration::is_active() const {
    auto state = m_state.lock();
    if (!state)
        return false;
    auto found = state->watches.find(m_fd);
    return found != state->watches.end() && found->second.id == m_id;
}

void EventLoop::Registration::reset() {
    // Only this registration's entry: after a remove(fd) through the older API, the fd number
    // may already belong to someone else's registration.
    if (is_active())
        m_state.lock()->remove(m_fd);
    m_state.reset();
    m_fd = -1;
    m_id = 0;
}

Expected<void> EventLoop::Registration::modify(uint32_t events) {
    if (!is_active())
        return Error::format("epoll_ctl modify fd {}: not registered", m_fd);
    return m_state.lock()->modify(m_fd, events);
}

Expected<int> EventLoop::run_once(std::chrono::milliseconds timeout) {
    std::array<epoll_event, 16> events {};
    int const ready = ::epoll_wait(m_state->epoll.get(), events.data(), static_cast<int>(events.size()),
                                   static_cast<int>(timeout.count()));
    if (ready < 0) {
        if (errno == EINTR)
            return 0;
        return Error::from_errno("epoll_wait");
    }
    int dispatched = 0;
    for (int i = 0; i < ready; ++i) {
        // A callback may remove other fds; look each one up afresh.
        epoll_event const& event = events[static_cast<size_t>(i)];
        auto found = m_state->watches.find(event.data.fd);
        if (found == m_state->watches.end() || found->second.events == 0)
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

#include "vmm/console_server.h"
#include "base/thread_annotations.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kvmm {

struct ConsoleServer::Shared {
    struct Client {
        UniqueFd fd;
        std::string output; // bytes not yet written to the client, at most CLIENT_BUFFER_CAPACITY
    };

    explicit Shared(EventFd event) : wake(std::move(event)) {}

    EventFd wake;       // the sink's "there is output" signal to the loop
    mutable Mutex lock; // guards everything below
    std::map<int, Client> clients GUARDED_BY(lock);
    // The most recent output, at most HISTORY_CAPACITY bytes, given to each client as it
    // attaches; kept under the same lock as the fan-out, so a client's stream is the history
    // followed by everything after it, with no gap and no repeat.
    std::deque<char> history GUARDED_BY(lock);
    uint64_t dropped GUARDED_BY(lock) { 0 };
    bool closed GUARDED_BY(lock) { false };
};

namespace {

// Bytes read from a client at a time; also the most input held back for the guest.
constexpr size_t READ_CHUNK = 4096;

enum class Sent { All, WouldBlock, Broken };

// Sends as much of `output` as the (non-blocking) client socket takes now, erasing what went out.
Sent send_queued(int fd, std::string& output) {
    while (!output.empty()) {
        ssize_t const written = ::send(fd, output.data(), output.size(), MSG_NOSIGNAL);
        if (written > 0) {
            output.erase(0, static_cast<size_t>(written));
            continue;
        }
        if (written < 0 && errno == EINTR)
            continue;
        if (written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return Sent::WouldBlock;
        return Sent::Broken;
    }
    return Sent::All;
}

class FanOutSink final : public ByteSink {
public:
    explicit FanOutSink(std::shared_ptr<ConsoleServer::Shared> shared) : m_shared(std::move(shared)) {}

    void write(std::span<uint8_t const> bytes) override {
        bool wake = false;
        {
            MutexLock guard(m_shared->lock);
            if (m_shared->closed)
                return;
            auto& history = m_shared->history;
            auto const kept = bytes.last(std::min(bytes.size(), ConsoleServer::HISTORY_CAPACITY));
            size_t const overflow = history.size() + kept.size() > ConsoleServer::HISTORY_CAPACITY
                                        ? history.size() + kept.size() - ConsoleServer::HISTORY_CAPACITY
                                        : 0;
            history.erase(history.begin(), history.begin() + static_cast<ptrdiff_t>(overflow));
            history.insert(history.end(), kept.begin(), kept.end());
            for (auto& [fd, client] : m_shared->clients) {
                size_t const room = ConsoleServer::CLIENT_BUFFER_CAPACITY - client.output.size();
                size_t const taken = std::min(room, bytes.size());
                wake = wake || (client.output.empty() && taken > 0);
                client.output.append(reinterpret_cast<char const*>(bytes.data()), taken);
                m_shared->dropped += bytes.size() - taken;
            }
        }
        if (wake)
            (void)m_shared->wake.signal();
    }

private:
    std::shared_ptr<ConsoleServer::Shared> m_shared;
};

} // namespace

Expected<std::unique_ptr<ConsoleServer>> ConsoleServer::create(std::string const& socket_path, EventLoop& loop,
                                                               Deliver deliver) {
    // Mode 0600: the console is a root shell for many guests.
    auto listener = TRY(UnixListener::listen(
        socket_path,
        { .what = "console socket", .mode = 0600, .backlog = static_cast<int>(MAX_CLIENTS), .non_blocking = true }));
    auto shared = std::make_shared<Shared>(TRY(EventFd::create()));
    std::unique_ptr<ConsoleServer> server(
        new ConsoleServer(std::move(listener), loop, std::move(deliver), std::move(shared)));
    auto* self = server.get();
    server->m_listener_registration = TRY(loop.watch(server->m_listener.fd(), [self] { self->accept_clients(); }));
    server->m_wake_registration = TRY(loop.watch(server->m_shared->wake.fd(), [self] {
        (void)self->m_shared->wake.consume();
        self->flush_output();
    }));
    return server;
}

ConsoleServer::ConsoleServer(UnixListener listener, EventLoop& loop, Deliver deliver, std::shared_ptr<Shared> shared)
    : m_listener(std::move(listener)), m_loop(loop), m_deliver(std::move(deliver)), m_shared(std::move(shared)) {}

ConsoleServer::~ConsoleServer() {
    m_listener_registration.reset();
    m_wake_registration.reset();
    {
        MutexLock guard(m_shared->lock);
        // What the guest wrote last is often why it stopped: clients get it before the close,
        // within FINAL_FLUSH_TIMEOUT for all of them together.
        auto const deadline = std::chrono::steady_clock::now() + FINAL_FLUSH_TIMEOUT;
        for (auto& [fd, client] : m_shared->clients) {
            while (send_queued(fd, client.output) == Sent::WouldBlock) {
                auto const left =
                    std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
                if (left.count() <= 0)
                    break;
                pollfd writable { fd, POLLOUT, 0 };
                (void)::poll(&writable, 1, static_cast<int>(left.count()));
            }
        }
        m_client_registrations.clear();
        m_shared->clients.clear();
        m_shared->closed = true;
    }
    // m_listener removes the socket file as it goes, only if it is still ours: another kvmm
    // may have replaced it meanwhile.
}

std::unique_ptr<ByteSink> ConsoleServer::make_sink() { return std::make_unique<FanOutSink>(m_shared); }

size_t ConsoleServer::client_count() const {
    MutexLock guard(m_shared->lock);
    return m_shared->clients.size();
}

uint64_t ConsoleServer::dropped_bytes() const {
    MutexLock guard(m_shared->lock);
    return m_shared->dropped;
}

void ConsoleServer::accept_clients() {
    while (true) {
        UniqueFd client(::accept4(m_listener.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!client.is_valid()) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                spdlog::warn("console socket accept: {}", std::strerror(errno));
            return;
        }
        int const fd = client.get();
        {
            MutexLock guard(m_shared->lock);
            if (m_shared->clients.size() >= MAX_CLIENTS) {
                spdlog::warn("console socket: refusing a client, {} are connected already", MAX_CLIENTS);
                continue; // closed by `client` going out of scope
            }
        }
        auto registration = m_loop.watch(fd, m_reading ? EventLoop::READABLE : 0u,
                                         [this, fd](uint32_t ready) { on_client_ready(fd, ready); });
        if (!registration) {
            spdlog::warn("console socket: {}", registration.error().message());
            continue;
        }
        m_client_registrations.insert_or_assign(fd, std::move(*registration));
        MutexLock guard(m_shared->lock);
        std::string first_output(m_shared->history.begin(), m_shared->history.end());
        if (!first_output.empty())
            (void)m_shared->wake.signal();
        m_shared->clients.emplace(fd, Shared::Client { std::move(client), std::move(first_output) });
    }
}

void ConsoleServer::on_client_ready(int fd, uint32_t ready) {
    if (ready & EventLoop::WRITABLE)
        flush_output();
    if (ready & EventLoop::READABLE)
        read_client(fd);
}

// Writes what each client can take now; a client with output left waits for writability.
void ConsoleServer::flush_output() {
    std::vector<int> broken;
    MutexLock guard(m_shared->lock);
    for (auto& [fd, client] : m_shared->clients) {
        if (send_queued(fd, client.output) == Sent::Broken)
            broken.push_back(fd);
        uint32_t const interest =
            (m_reading ? EventLoop::READABLE : 0u) | (client.output.empty() ? 0u : EventLoop::WRITABLE);
        set_interest(fd, interest);
    }
    for (int fd : broken) {
        m_client_registrations.erase(fd); // leaves the loop before its fd is closed below
        m_shared->clients.erase(fd);
    }
}

void ConsoleServer::read_client(int fd) {
    uint8_t buffer[READ_CHUNK];
    ssize_t const received = ::recv(fd, buffer, sizeof(buffer), 0);
    if (received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (received <= 0) {
        drop_client(fd);
        return;
    }
    m_pending.assign(buffer, buffer + received);
    m_pending_offset = 0;
    flush_pending_input();
}

void ConsoleServer::flush_pending_input() {
    if (has_pending_input() && m_deliver)
        m_pending_offset += m_deliver(std::span<uint8_t const>(m_pending).subspan(m_pending_offset));
    else if (has_pending_input())
        m_pending_offset = m_pending.size(); // no input device: the bytes have nowhere to go
    set_reading(!has_pending_input());
}

void ConsoleServer::set_reading(bool reading) {
    if (reading == m_reading)
        return;
    m_reading = reading;
    MutexLock guard(m_shared->lock);
    for (auto& [fd, client] : m_shared->clients)
        set_interest(fd, (reading ? EventLoop::READABLE : 0u) | (client.output.empty() ? 0u : EventLoop::WRITABLE));
}

void ConsoleServer::set_interest(int fd, uint32_t interest) {
    if (auto found = m_client_registrations.find(fd); found != m_client_registrations.end())
        (void)found->second.modify(interest);
}

void ConsoleServer::drop_client(int fd) {
    m_client_registrations.erase(fd);
    MutexLock guard(m_shared->lock);
    m_shared->clients.erase(fd);
}

} // namespace kvmm

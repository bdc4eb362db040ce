// ConsoleServer: the guest console on a Unix stream socket (kvmm --console socket=PATH), so a
// manager can attach to a VM's console at any time, from any number of clients.
//
// Output: everything the console device writes goes to every connected client. Each client
// has a bounded output buffer (CLIENT_BUFFER_CAPACITY); a client that reads too slowly loses
// the bytes that do not fit (counted in dropped_bytes()) instead of stalling the vCPU that
// wrote them. The last HISTORY_CAPACITY bytes of output are kept and given to each client as
// it attaches, ahead of what follows: a manager that connects right after start sees the
// boot, and a console attached later sees the recent screen, without a gap or a repeat
// between history and live output. Input: bytes from any client go to the
// guest's console input through `deliver`, which takes only what fits in the device's receive buffer; the rest waits
// here (at most one read's worth) and client sockets are not read again until it is delivered, as ConsoleInput does for
// stdin.
//
// The socket file is created with mode 0600 (the console is a root shell for many guests) and
// unlinked by the destructor; a stale socket file (nothing listening) is replaced, a live one
// is an error.
//
// Threading: create(), the destructor, has_pending_input() and flush_pending_input() run on
// the event loop's thread, which also runs every callback. The ByteSink from make_sink() may
// be written from any thread (vCPU threads): it only appends to the client buffers under a
// lock and wakes the loop through an eventfd.
#pragma once

#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/expected.h"
#include "base/unix_socket.h"
#include "devices/legacy/byte_sink.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kvmm {

class ConsoleServer {
public:
    // Hands bytes to the guest and returns how many it accepted.
    using Deliver = std::function<size_t(std::span<uint8_t const>)>;

    static constexpr size_t CLIENT_BUFFER_CAPACITY = 64 * 1024;
    // A quarter of a client's buffer, so that output arriving while a new client takes its
    // history in still fits.
    static constexpr size_t HISTORY_CAPACITY = CLIENT_BUFFER_CAPACITY / 4;
    static constexpr size_t MAX_CLIENTS = 16;
    // How long the destructor waits, at most, for clients to take the output still queued.
    static constexpr std::chrono::milliseconds FINAL_FLUSH_TIMEOUT { 500 };

    static Expected<std::unique_ptr<ConsoleServer>> create(std::string const& socket_path, EventLoop& loop,
                                                           Deliver deliver);
    ~ConsoleServer();
    ConsoleServer(ConsoleServer const&) = delete;
    ConsoleServer& operator=(ConsoleServer const&) = delete;

    // The console device's output; it stays valid (and harmless) after the server is gone.
    std::unique_ptr<ByteSink> make_sink();

    // Replaces the input destination (the device exists only after the sink was handed out).
    void set_deliver(Deliver deliver) { m_deliver = std::move(deliver); }
    bool has_pending_input() const { return m_pending_offset < m_pending.size(); }
    // Retries delivering held-back input; resumes reading the clients once it is all taken.
    void flush_pending_input();

    size_t client_count() const;
    uint64_t dropped_bytes() const;
    std::string const& socket_path() const { return m_listener.path(); }

    struct Shared; // the state the sink shares with the server (clients' output buffers)

private:
    ConsoleServer(UnixListener listener, EventLoop& loop, Deliver deliver, std::shared_ptr<Shared> shared);

    void accept_clients();
    void on_client_ready(int fd, uint32_t ready);
    void flush_output();
    void read_client(int fd);
    void drop_client(int fd);
    void set_reading(bool reading);
    void set_interest(int fd, uint32_t interest);

    UnixListener m_listener; // removes the socket file it created when the server goes
    EventLoop& m_loop;
    Deliver m_deliver;
    std::shared_ptr<Shared> m_shared;
    // After m_listener and m_shared (whose fds they watch), so they leave the loop first. The
    // clients' registrations are the loop thread's alone, unlike their buffers in m_shared.
    EventLoop::Registration m_listener_registration;
    EventLoop::Registration m_wake_registration;
    std::map<int, EventLoop::Registration> m_client_registrations;
    std::vector<uint8_t> m_pending;
    size_t m_pending_offset { 0 };
    bool m_reading { true };
};

} // namespace kvmm

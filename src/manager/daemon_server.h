// DaemonServer: kvmmd's Unix socket (mode 0660: root and the socket's group may manage VMs).
// Each client connection gets its own thread, which reads request lines and answers each with
// Daemon::handle() before reading the next; long verbs (shutdown with a timeout) thus block only
// their own client.
//
// No client can hold a place for ever, and none can lock the others out:
// - a request line must arrive whole within `request_timeout` of its first byte (a client
//   sending one byte at a time gains nothing: bytes do not restart the clock);
// - a connection without a request in progress is closed after `idle_timeout`;
// - an answer the client does not read within `request_timeout` ends the connection;
// - at `max_clients` connections, a new client takes the place of the connection that has been
//   waiting longest since its last request (idle or slowly sending); a connection that has sent
//   a whole request (in its socket, read, or running) is never taken; only when no connection
//   can make room is the new client refused, with an error line.
// kvmmd has no long-lived streams of its own: `kvmmctl console` asks for the console socket and
// attaches to kvmm's console server directly, so nothing attached to a console is ever closed
// here for being quiet.
//
// Threading: start() and stop() (also run by the destructor) from the owning thread. One accept
// thread runs a base EventLoop with the listening socket and the stop eventfd (and joins the
// threads of finished clients); each client has its own thread, since a verb may block for as
// long as it takes. stop() stops accepting, shuts down every connection and joins all threads
// (a verb in progress finishes first); the socket file is unlinked if it is still ours.
#pragma once

#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/expected.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "base/unix_socket.h"
#include "manager/daemon.h"

#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace kvmm {

struct DaemonServerOptions {
    size_t max_clients { 256 };
    std::chrono::milliseconds request_timeout { std::chrono::seconds(10) };
    std::chrono::milliseconds idle_timeout { std::chrono::seconds(60) };
};

class DaemonServer {
public:
    static Expected<std::unique_ptr<DaemonServer>> start(std::string const& socket_path, Daemon& daemon,
                                                         DaemonServerOptions options = {});
    ~DaemonServer();
    DaemonServer(DaemonServer const&) = delete;
    DaemonServer& operator=(DaemonServer const&) = delete;

    void stop();

private:
    using Clock = std::chrono::steady_clock;

    struct Client {
        UniqueFd fd;
        std::thread thread;
        Clock::time_point waiting_since; // connected, or answered its last request
        bool running_verb { false };
        bool request_buffered { false }; // a complete request line has been read, its verb not yet run
        bool evicted { false };          // shut down to make room; its thread is on its way out
        bool finished { false };
    };

    DaemonServer(UnixListener listener, EventFd stop_event, EventLoop loop, Daemon& daemon,
                 DaemonServerOptions options);
    // The accept thread's body and its callbacks.
    void accept_loop();
    void accept_clients();
    void pause_accepting();
    // With m_lock held: makes room for one more client if the cap is reached; false if it cannot.
    // A connection with a complete request waiting (in its socket or read) is never chosen: its
    // verb would run for a client that has been told to go.
    bool make_room() REQUIRES(m_lock);
    void serve(Client& client);
    void join_finished_clients();

    UnixListener m_listener; // removes the socket file it created, if it is still that file
    EventFd m_stop_event;
    Daemon& m_daemon;
    DaemonServerOptions m_options;
    // The accept thread's (set up by start() before it runs): the loop, its registrations
    // (after the fds they watch, so they leave first), and the listener's back-off.
    EventLoop m_loop;
    EventLoop::Registration m_listener_registration;
    EventLoop::Registration m_stop_registration;
    bool m_loop_stopping { false };
    std::optional<Clock::time_point> m_accept_paused_until;
    Clock::time_point m_last_accept_error {};
    Mutex m_lock; // guards m_clients (and each Client's flags and times) and m_stopped
    std::list<Client> m_clients GUARDED_BY(m_lock);
    bool m_stopped GUARDED_BY(m_lock) { false };
    std::thread m_accept_thread;
};

} // namespace kvmm

// DaemonServer: kvmmd's Unix socket (mode 0660: root and the socket's group may manage VMs).
// Each client connection gets its own thread, which reads request lines and answers each with
// Daemon::handle() before reading the next; long verbs (shutdown with a timeout) thus block only
// their own client. At most `max_clients` connections are served at once; more are refused with
// an error line.
//
// Threading: start() and stop() (also run by the destructor) from the owning thread. stop()
// stops accepting, shuts down every connection and joins all threads (a verb in progress
// finishes first); the socket file is unlinked if it is still ours.
#pragma once

#include "base/event_fd.h"
#include "base/expected.h"
#include "base/unique_fd.h"
#include "manager/daemon.h"

#include <sys/types.h>

#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace kvmm {

class DaemonServer {
public:
    static constexpr size_t DEFAULT_MAX_CLIENTS = 256;

    static Expected<std::unique_ptr<DaemonServer>> start(std::string const& socket_path, Daemon& daemon,
                                                         size_t max_clients = DEFAULT_MAX_CLIENTS);
    ~DaemonServer();
    DaemonServer(DaemonServer const&) = delete;
    DaemonServer& operator=(DaemonServer const&) = delete;

    void stop();

private:
    struct Client {
        UniqueFd fd;
        std::thread thread;
        bool finished { false };
    };

    DaemonServer(std::string socket_path, UniqueFd listener, EventFd stop_event, Daemon& daemon, size_t max_clients,
                 ino_t inode);
    void accept_loop();
    void serve(Client& client);
    void join_finished_clients();

    std::string m_socket_path;
    UniqueFd m_listener;
    EventFd m_stop_event;
    Daemon& m_daemon;
    size_t m_max_clients;
    ino_t m_inode;
    std::mutex m_lock; // guards m_clients and m_stopped
    std::list<Client> m_clients;
    bool m_stopped { false };
    std::thread m_accept_thread;
};

} // namespace kvmm

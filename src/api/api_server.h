// ApiServer: serves HTTP/1.1 on a Unix stream socket (Firecracker's --api-sock) and passes each
// complete request to an ApiHandler.
//
// start() creates, binds and listens before returning, so the socket accepts connections as
// soon as it returns; a stale socket file (nothing listening) is replaced, a live one or a
// path that is not a socket is an error. The socket file is created with mode 0600: the API
// controls the VM, so only its owner may connect.
//
// One thread multiplexes the listening socket and up to `max_connections` clients.
// Each connection has its own parser and output buffer. Handlers run on this thread, one
// request at a time, in arrival order per connection. A client cannot hold a slot for ever:
//  - a request has `request_deadline` from its first byte to the end of its body (a client
//    that trickles one byte at a time gets no more); past it the client gets 408 (when nothing
//    else is queued for it) and is closed, as an HTTP/1.1 server closes a request that times
//    out (RFC 9110 section 15.5.9);
//  - a response has as long again to be read; past it the connection is closed without a
//    408, since a client that does not read its response would not read that either;
//  - a connection with no request in progress (new, or kept alive after a response) is
//    closed after `idle_timeout`, silently, as RFC 9112 section 9.8 allows;
//  - at the cap, a new client takes the slot of the connection idle the longest, which is
//    closed; failing that, the slot of the request that has been arriving the longest, if for
//    more than `slow_request_grace` (it gets 408 and is closed), so clients trickling request
//    after request, each inside its deadline, cannot hold every slot; only when every slot has
//    a younger request in progress or a response being read does the new client get 503.
// At most ACCEPTS_PER_WAKEUP clients are accepted per wake-up, so a stream of new connections
// cannot keep the thread from the clients it already serves.
// The thread runs a base EventLoop (one registration per connection, removed with it) and sleeps
// in it until the nearest of these deadlines. When accept() fails for
// lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the server logs it (rate-limited) and
// stops polling the listening socket for `accept_retry_delay`, so a full fd table costs a
// retry every 100 ms instead of a spinning thread, and service resumes once fds free up.
//
// Threading: start() and stop() from one owning thread; stop() (also run by the destructor)
// wakes the server thread, joins it, closes every connection and unlinks the socket file if it
// is still the one this server created. Work that belongs on the server thread besides the
// requests (the metrics timer) joins its loop through ApiServerOptions::attach_to_loop.
#pragma once

#include "api/api_handler.h"
#include "api/http_request_parser.h"
#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/expected.h"
#include "base/unix_socket.h"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace kvmm {

struct ApiServerOptions {
    size_t max_connections { 16 };
    // API requests are small (bodies up to 50 KiB) and local: a client writes one in well under
    // a millisecond. Ten seconds still covers a stalled or heavily loaded client (a script
    // stopped between writes, a debugger) while bounding how long a slot can be held.
    std::chrono::milliseconds request_deadline { 10'000 };
    // Long enough for a client's sequence of calls with pauses between them (the SDKs keep one
    // connection); idle connections give up their slot to new clients anyway, so this only
    // tidies up after clients that went away without closing.
    std::chrono::milliseconds idle_timeout { 30'000 };
    // At the cap with no idle slot, a new client takes the slot of the request in progress the
    // longest, but only of one older than this: a local client writes a whole request in well
    // under a millisecond, so a request still arriving after a second is a slow client's, while
    // a burst of well-behaved clients (each a few microseconds into its request) is answered 503
    // rather than cut off mid-request.
    std::chrono::milliseconds slow_request_grace { 1'000 };
    // How long the listening socket is ignored after accept() failed for lack of resources.
    std::chrono::milliseconds accept_retry_delay { 100 };
    HttpRequestParser::Limits limits {};
    // Called by start() with the server's event loop before the server thread starts (a failure
    // is start()'s); from then on the loop is the server thread's, and handlers may add to it
    // (timers). `detach_from_loop` is called by stop() once the thread has ended, before the
    // loop goes: whatever was attached must leave it then.
    std::function<Expected<void>(EventLoop&)> attach_to_loop {};
    std::function<void()> detach_from_loop {};
    // Called first on the server thread (named "api"), before it reads any client: the
    // sandbox's filter of the API role. An error ends the process (main decides how).
    std::function<void()> on_thread_start {};
};

class ApiServer {
public:
    // Connections accepted per wake-up of the server thread; the listening socket stays readable,
    // so epoll brings the thread back for the rest after it has served the other ready clients.
    static constexpr int ACCEPTS_PER_WAKEUP = 16;

    static Expected<std::unique_ptr<ApiServer>> start(std::string const& socket_path, ApiHandler& handler,
                                                      ApiServerOptions options = {});
    ~ApiServer();

    ApiServer(ApiServer const&) = delete;
    ApiServer& operator=(ApiServer const&) = delete;

    void stop();
    std::string const& socket_path() const { return m_socket_path; }

private:
    class Loop;
    ApiServer(UnixListener listener, EventFd stop_event, std::unique_ptr<Loop> loop,
              std::function<void()> detach_from_loop);

    std::string m_socket_path;
    UnixListener m_listener;
    EventFd m_stop_event;
    std::unique_ptr<Loop> m_loop; // the server thread's while it runs
    std::function<void()> m_detach_from_loop;
    std::thread m_thread;
};

} // namespace kvmm

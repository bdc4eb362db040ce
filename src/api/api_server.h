// ApiServer: serves HTTP/1.1 on a Unix stream socket (Firecracker's --api-sock) and passes each
// complete request to an ApiHandler.
//
// start() creates, binds and listens before returning, so the socket accepts connections as
// soon as it returns; a stale socket file (nothing listening) is replaced, a live one or a
// path that is not a socket is an error. The socket file is created with mode 0600: the API
// controls the VM, so only its owner may connect.
//
// One thread multiplexes the listening socket and up to `max_connections` clients with epoll;
// further clients get 503 and are closed. Each connection has its own parser and output buffer.
// A connection that has not completed a request within `request_timeout` of its last byte
// (a slow or stuck client) is dropped, so it cannot hold a slot for ever; a client that
// disconnects mid-request is simply forgotten. Handlers run on this thread, one request at a
// time, in arrival order per connection.
//
// Threading: start() and stop() from one owning thread; stop() (also run by the destructor)
// wakes the server thread, joins it, closes every connection and unlinks the socket file if it
// is still the one this server created.
#pragma once

#include "api/api_handler.h"
#include "api/http_request_parser.h"
#include "base/event_fd.h"
#include "base/expected.h"
#include "base/unique_fd.h"

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

namespace kvmm {

struct ApiServerOptions {
    size_t max_connections { 16 };
    std::chrono::milliseconds request_timeout { 5000 };
    HttpRequestParser::Limits limits {};
};

class ApiServer {
public:
    static Expected<std::unique_ptr<ApiServer>> start(std::string const& socket_path, ApiHandler& handler,
                                                      ApiServerOptions options = {});
    ~ApiServer();

    ApiServer(ApiServer const&) = delete;
    ApiServer& operator=(ApiServer const&) = delete;

    void stop();
    std::string const& socket_path() const { return m_socket_path; }

private:
    class Loop;
    ApiServer(std::string socket_path, UniqueFd listener, EventFd stop_event, ino_t inode, dev_t device);

    std::string m_socket_path;
    UniqueFd m_listener;
    EventFd m_stop_event;
    ino_t m_inode;
    dev_t m_device;
    std::thread m_thread;
};

} // namespace kvmm

// KvmmClient: kvmmd's side of one kvmm process's control socket (kvmm --control-sock), which
// serves the Firecracker-compatible API (docs/api.md): GET / for the state, PATCH /vm to pause
// and resume, PUT /actions for SendCtrlAltDel and FlushMetrics. HTTP/1.1, one request per
// connection, bounded by a timeout so a stuck kvmm cannot hang the daemon.
//
// Threading: holds only the path; any thread, concurrently.
#pragma once

#include "base/expected.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <string_view>

namespace kvmm {

struct HttpReply {
    int status { 0 };
    std::string body;
};

// Largest answer we accept from kvmm (its biggest, GET /vm/config, is a few KiB).
inline constexpr size_t MAX_KVMM_REPLY = 1024 * 1024;

class KvmmClient {
public:
    explicit KvmmClient(std::string socket_path, std::chrono::milliseconds timeout = std::chrono::seconds(5))
        : m_socket_path(std::move(socket_path)), m_timeout(timeout) {}

    // Any request; the reply whatever its status.
    Expected<HttpReply> request(std::string_view method, std::string_view path, std::string_view body = {}) const;

    // The operations kvmmd uses. A non-2xx answer is an error carrying kvmm's fault_message.
    Expected<nlohmann::json> describe() const; // GET /
    Expected<void> pause() const;
    Expected<void> resume() const;
    Expected<void> send_ctrl_alt_del() const;
    Expected<void> flush_metrics() const;
    // PUT /snapshot/create, Full (the VM must be paused).
    Expected<void> create_snapshot(std::string const& snapshot_path, std::string const& memory_path) const;

    std::string const& socket_path() const { return m_socket_path; }

private:
    Expected<void> expect_success(std::string_view method, std::string_view path, std::string_view body) const;

    std::string m_socket_path;
    std::chrono::milliseconds m_timeout;
};

// Parses "HTTP/1.1 204 No Content\r\n...headers...\r\n\r\nbody" once complete: nullopt while
// more bytes are needed (headers or Content-Length body incomplete).
Expected<std::optional<HttpReply>> parse_http_reply(std::string_view bytes);

} // namespace kvmm

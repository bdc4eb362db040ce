// The kvmmd control protocol, shared by the daemon and its clients (kvmmctl, the tests):
// newline-delimited JSON over a Unix stream socket. Each request is one JSON object on one
// line, {"verb": "start", "name": "web1", ...}; each answer is one line, {"ok": true, ...} or
// {"ok": false, "error": "..."}. docs/kvmmctl.md lists the verbs and their fields.
//
// Also LineBuffer (splits a byte stream into bounded lines) and DaemonClient (one connection
// to kvmmd, one request at a time).
//
// Threading: plain values; a DaemonClient is used by one thread at a time.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"
#include "base/unix_socket.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace kvmm {

// A request line may carry a whole TOML definition; anything longer is refused.
inline constexpr size_t MAX_PROTOCOL_LINE = 1024 * 1024;

// Parses one request line: a JSON object with a string "verb". The error says what is wrong.
Expected<nlohmann::json> parse_request(std::string_view line);

nlohmann::json ok_response(nlohmann::json fields = nlohmann::json::object());
nlohmann::json error_response(std::string_view message);
// The JSON text plus '\n'; invalid UTF-8 (e.g. in console output) is replaced, never thrown on.
std::string encode_line(nlohmann::json const& message);

// Field accessors for request objects; errors name the field and the type found.
Expected<std::string> required_string(nlohmann::json const& request, std::string_view field);
Expected<std::optional<std::string>> optional_string(nlohmann::json const& request, std::string_view field);
Expected<std::optional<bool>> optional_bool(nlohmann::json const& request, std::string_view field);
Expected<std::optional<uint64_t>> optional_unsigned(nlohmann::json const& request, std::string_view field);

// Accumulates bytes and hands out complete lines (without the '\n').
class LineBuffer {
public:
    explicit LineBuffer(size_t max_line = MAX_PROTOCOL_LINE) : m_max_line(max_line) {}

    void append(std::string_view bytes) { m_buffer.append(bytes); }
    // True while bytes of a line that is not complete yet are held.
    bool has_partial_line() const { return !m_buffer.empty(); }
    // True when next_line() has a complete line to hand out.
    bool has_complete_line() const { return m_buffer.find('\n') != std::string::npos; }
    // The next complete line, nullopt if none yet; an error once a line exceeds the limit.
    Expected<std::optional<std::string>> next_line();

private:
    std::string m_buffer;
    size_t m_max_line;
};

// Writes all of `text` to a (blocking) socket; MSG_NOSIGNAL, so a vanished peer is an error.
Expected<void> send_all(int fd, std::string_view text);
// The same, but gives up at `deadline` (an error with errno ETIMEDOUT): a peer that does not
// read cannot hold the caller.
Expected<void> send_all(int fd, std::string_view text, std::chrono::steady_clock::time_point deadline);

// Connecting (connect_unix_socket, with or without a bounded wait) is base/unix_socket.h's.

class DaemonClient {
public:
    // Without a timeout, connecting and each call wait as long as kvmmd takes.
    static Expected<DaemonClient> connect(std::string const& socket_path,
                                          std::optional<std::chrono::milliseconds> timeout = std::nullopt);

    // Sends `request` and waits for the answer. {"ok": false} becomes an Error with the
    // daemon's message; otherwise the whole answer object is returned. With `timeout`, an
    // answer that has not arrived whole by then is an error with errno ETIMEDOUT.
    Expected<nlohmann::json> call(nlohmann::json const& request,
                                  std::optional<std::chrono::milliseconds> timeout = std::nullopt);

private:
    explicit DaemonClient(UniqueFd fd) : m_fd(std::move(fd)) {}

    UniqueFd m_fd;
    LineBuffer m_lines;
};

} // namespace kvmm

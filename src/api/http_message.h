// HTTP/1.1 messages of the API socket: the parsed request handed to an ApiHandler and the
// response it returns, plus the writer that serialises a response (RFC 9112 section 4, status
// line; RFC 9110 section 8.6, Content-Length).
//
// Threading: plain value types and pure functions; no shared state.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvmm {

struct HttpRequest {
    enum class Version { Http10, Http11 };

    std::string method; // as sent; methods are case-sensitive (RFC 9110 section 9.1)
    std::string target; // origin-form: path plus optional "?query"
    Version version { Version::Http11 };
    std::vector<std::pair<std::string, std::string>> headers; // names lower-cased, values trimmed
    std::string body;
    bool keep_alive { true };

    // The target without its query string.
    std::string_view path() const;
    // The first header named `name` (lower-case), if any.
    std::optional<std::string_view> header(std::string_view name) const;
};

struct HttpResponse {
    int status { 200 };
    std::string body;                // JSON text, or empty
    bool close_connection { false }; // ask the server to close after sending
    // Extra header fields (e.g. Firecracker's "Deprecation: true"); names and values must be
    // plain tokens without CR or LF, which the handlers that set them guarantee.
    std::vector<std::pair<std::string, std::string>> headers;

    static HttpResponse json(int status, std::string body) { return { status, std::move(body), false, {} }; }
    static HttpResponse no_content() { return { 204, {}, false, {} }; }
    // {"fault_message": message}, Firecracker's error body.
    static HttpResponse fault(int status, std::string_view message);
};

// The reason phrase for the status codes the API uses ("Unknown" otherwise).
std::string_view http_reason_phrase(int status);

// Serialises `response` as an HTTP/1.1 message with Server, Connection and, when there is a body,
// Content-Type: application/json and Content-Length. 1xx and 204 carry neither (RFC 9110 section 8.6).
std::string serialize_response(HttpResponse const& response, bool keep_alive);

// "HTTP/1.1 100 Continue", sent when a client waits with Expect: 100-continue (RFC 9110 section 10.1.1).
inline constexpr std::string_view HTTP_CONTINUE_RESPONSE = "HTTP/1.1 100 Continue\r\n\r\n";

inline constexpr std::string_view HTTP_SERVER_NAME = "kvmm";

} // namespace kvmm

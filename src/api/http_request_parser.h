// HttpRequestParser: an incremental HTTP/1.1 request parser for the API socket (RFC 9112).
//
// Bytes are fed as they arrive; the parser answers NeedMore, Complete (take_request() then
// yields the request, and bytes already fed beyond it stay buffered for the next one:
// pipelining) or Error (error_status() is the status to answer with, after which the
// connection must be closed because the message framing is lost).
//
// What is accepted, and why:
//  - request line "METHOD SP origin-form SP HTTP/1.x" (section 3); HTTP/1.0 and HTTP/1.1 only,
//    other versions are 505; a target not starting with '/' is 400.
//  - lines end in CRLF; a bare LF is tolerated as section 2.2 allows.
//  - header field names are tokens, compared case-insensitively; obsolete line folding and
//    whitespace before the colon are 400 (section 5.1, 5.2).
//  - the body is framed by Content-Length only. Transfer-Encoding (chunked or other) is 501:
//    the API's clients never need it and supporting it would be a second framing path to get
//    wrong. A non-numeric Content-Length or two different ones are 400 (section 6.3).
//  - the header block is capped (431) and so is the body (413; Firecracker's 51200 bytes).
//  - Expect: 100-continue makes continue_pending() true once, so the server answers
//    "100 Continue" before the client sends the body (RFC 9110 section 10.1.1); other
//    expectations are 417.
//  - keep-alive: HTTP/1.1 by default unless "Connection: close"; HTTP/1.0 only with
//    "Connection: keep-alive" (RFC 9112 section 9.3).
//
// Threading: one parser per connection, used by one thread.
#pragma once

#include "api/http_message.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace kvmm {

class HttpRequestParser {
public:
    struct Limits {
        size_t max_header_bytes { 8 * 1024 };
        size_t max_body_bytes { 51200 }; // Firecracker's HTTP payload limit
    };
    enum class Result { NeedMore, Complete, Error };

    HttpRequestParser() = default;
    explicit HttpRequestParser(Limits limits) : m_limits(limits) {}

    // Appends `data` and parses as far as possible. After Complete, call take_request() before
    // feeding again; feed("") re-examines bytes already buffered (the next pipelined request).
    Result feed(std::string_view data);

    // Moves the completed request out and starts on the next one.
    HttpRequest take_request();

    // True once per request that asked for 100-continue and whose body has not arrived yet.
    bool take_continue_pending();

    // Status code and reason after Error.
    int error_status() const { return m_error_status; }
    std::string const& error_message() const { return m_error_message; }

    // Whether any byte of an unfinished request is buffered.
    bool has_partial_request() const { return !m_buffer.empty() || m_state != State::Headers; }

private:
    enum class State { Headers, Body, Complete, Error };

    Result parse_headers();
    Result fail(int status, std::string message);

    Limits m_limits;
    State m_state { State::Headers };
    std::string m_buffer;
    HttpRequest m_request;
    size_t m_content_length { 0 };
    bool m_continue_pending { false };
    int m_error_status { 0 };
    std::string m_error_message;
};

} // namespace kvmm

#include "api/http_request_parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace kvmm {
namespace {

// tchar of RFC 9110 section 5.6.2.
bool is_token_char(char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view text) { return !text.empty() && std::all_of(text.begin(), text.end(), is_token_char); }

std::string to_lower(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; });
    return out;
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
        text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t'))
        text.remove_suffix(1);
    return text;
}

// Does the comma-separated list `value` hold `token` (case-insensitively)?
bool list_contains(std::string_view value, std::string_view token) {
    while (!value.empty()) {
        size_t comma = value.find(',');
        if (to_lower(trim(value.substr(0, comma))) == token)
            return true;
        if (comma == std::string_view::npos)
            break;
        value.remove_prefix(comma + 1);
    }
    return false;
}

// Splits off the next line (without CR LF or bare LF); nullopt when no full line is present.
std::optional<std::string_view> next_line(std::string_view& text) {
    size_t newline = text.find('\n');
    if (newline == std::string_view::npos)
        return std::nullopt;
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline + 1);
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
    return line;
}

} // namespace

HttpRequestParser::Result HttpRequestParser::fail(int status, std::string message) {
    m_state = State::Error;
    m_error_status = status;
    m_error_message = std::move(message);
    return Result::Error;
}

HttpRequestParser::Result HttpRequestParser::feed(std::string_view data) {
    if (m_state == State::Error)
        return Result::Error;
    if (m_state == State::Complete)
        return Result::Complete;
    m_buffer.append(data);
    if (m_state == State::Headers) {
        Result result = parse_headers();
        if (result != Result::Complete)
            return result;
    }
    // State::Body
    if (m_buffer.size() < m_content_length)
        return Result::NeedMore;
    m_request.body = m_buffer.substr(0, m_content_length);
    m_buffer.erase(0, m_content_length);
    m_continue_pending = false;
    m_state = State::Complete;
    return Result::Complete;
}

HttpRequestParser::Result HttpRequestParser::parse_headers() {
    // Clients may send empty lines before a request line (RFC 9112 section 2.2).
    size_t leading = 0;
    while (leading < m_buffer.size() && (m_buffer[leading] == '\r' || m_buffer[leading] == '\n'))
        ++leading;
    m_buffer.erase(0, leading);

    size_t end = m_buffer.find("\n\r\n");
    size_t terminator = 3;
    size_t const bare = m_buffer.find("\n\n");
    if (bare != std::string::npos && (end == std::string::npos || bare < end)) {
        end = bare;
        terminator = 2;
    }
    if (end == std::string::npos) {
        if (m_buffer.size() > m_limits.max_header_bytes)
            return fail(431, fmt::format("header block exceeds {} bytes", m_limits.max_header_bytes));
        return Result::NeedMore;
    }
    size_t const block_size = end + terminator;
    if (block_size > m_limits.max_header_bytes)
        return fail(431,
                    fmt::format("header block of {} bytes exceeds {} bytes", block_size, m_limits.max_header_bytes));

    std::string_view block(m_buffer.data(), end + 1);
    std::string_view request_line = *next_line(block);

    // Request line: exactly three parts separated by single spaces.
    size_t first_space = request_line.find(' ');
    size_t last_space = request_line.rfind(' ');
    if (first_space == std::string_view::npos || first_space == last_space)
        return fail(400, fmt::format("malformed request line '{}'", request_line));
    std::string_view method = request_line.substr(0, first_space);
    std::string_view target = request_line.substr(first_space + 1, last_space - first_space - 1);
    std::string_view version = request_line.substr(last_space + 1);
    if (!is_token(method))
        return fail(400, fmt::format("invalid method '{}'", method));
    if (target.empty() || target.front() != '/' || target.find_first_of(" \t") != std::string_view::npos)
        return fail(400, fmt::format("request target '{}' is not an absolute path", target));
    if (version == "HTTP/1.1")
        m_request.version = HttpRequest::Version::Http11;
    else if (version == "HTTP/1.0")
        m_request.version = HttpRequest::Version::Http10;
    else if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && version[6] == '.')
        return fail(505, fmt::format("HTTP version '{}' is not supported", version));
    else
        return fail(400, fmt::format("malformed HTTP version '{}'", version));
    m_request.method = std::string(method);
    m_request.target = std::string(target);

    std::optional<uint64_t> content_length;
    bool keep_alive = m_request.version == HttpRequest::Version::Http11;
    while (auto line = next_line(block)) {
        if (line->empty())
            break;
        if (line->front() == ' ' || line->front() == '\t')
            return fail(400, "obsolete header line folding is not accepted");
        size_t colon = line->find(':');
        if (colon == std::string_view::npos)
            return fail(400, fmt::format("header line without a colon: '{}'", *line));
        std::string_view name = line->substr(0, colon);
        if (!is_token(name))
            return fail(400, fmt::format("invalid header name '{}'", name));
        std::string lower_name = to_lower(name);
        std::string_view value = trim(line->substr(colon + 1));

        if (lower_name == "content-length") {
            uint64_t length = 0;
            auto [end_pointer, error] = std::from_chars(value.data(), value.data() + value.size(), length);
            if (value.empty() || error != std::errc() || end_pointer != value.data() + value.size())
                return fail(400, fmt::format("invalid Content-Length '{}'", value));
            if (content_length && *content_length != length)
                return fail(400, fmt::format("conflicting Content-Length values {} and {}", *content_length, length));
            content_length = length;
        } else if (lower_name == "transfer-encoding") {
            return fail(501, fmt::format("Transfer-Encoding '{}' is not supported; send a Content-Length", value));
        } else if (lower_name == "expect") {
            if (to_lower(value) != "100-continue")
                return fail(417, fmt::format("unsupported expectation '{}'", value));
            m_continue_pending = true;
        } else if (lower_name == "connection") {
            if (list_contains(value, "close"))
                keep_alive = false;
            else if (list_contains(value, "keep-alive"))
                keep_alive = true;
        }
        m_request.headers.emplace_back(std::move(lower_name), std::string(value));
    }
    m_request.keep_alive = keep_alive;

    m_content_length = content_length.value_or(0);
    if (m_content_length > m_limits.max_body_bytes)
        return fail(413, fmt::format("body of {} bytes exceeds the limit of {} bytes", m_content_length,
                                     m_limits.max_body_bytes));
    if (m_content_length == 0)
        m_continue_pending = false;
    m_buffer.erase(0, block_size);
    m_state = State::Body;
    return Result::Complete;
}

HttpRequest HttpRequestParser::take_request() {
    HttpRequest request = std::move(m_request);
    m_request = {};
    m_state = State::Headers;
    m_content_length = 0;
    m_continue_pending = false;
    return request;
}

bool HttpRequestParser::take_continue_pending() {
    // Only worth answering while the body is still missing.
    bool pending = m_continue_pending && m_state == State::Body && m_buffer.size() < m_content_length;
    m_continue_pending = false;
    return pending;
}

} // namespace kvmm

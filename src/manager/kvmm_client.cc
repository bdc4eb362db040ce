#include "manager/kvmm_client.h"

#include "manager/protocol.h"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <sys/socket.h>
#include <sys/time.h>

namespace kvmm {

namespace {

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size())
        return false;
    for (size_t i = 0; i < a.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    }
    return true;
}

std::string trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
        text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r'))
        text.remove_suffix(1);
    return std::string(text);
}

} // namespace

// RFC 9112 sections 4 (status line) and 6.3 (Content-Length framing); kvmm's server always
// sends Content-Length, so chunked bodies are not handled.
Expected<std::optional<HttpReply>> parse_http_reply(std::string_view bytes) {
    size_t const header_end = bytes.find("\r\n\r\n");
    if (header_end == std::string_view::npos) {
        if (bytes.size() > MAX_KVMM_REPLY)
            return Error::format("kvmm's reply headers exceed {} bytes", MAX_KVMM_REPLY);
        return std::optional<HttpReply> {};
    }
    std::string_view head = bytes.substr(0, header_end);
    size_t const line_end = head.find("\r\n");
    std::string_view status_line = head.substr(0, line_end);
    if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12)
        return Error::format("kvmm sent an invalid status line '{}'", status_line);
    HttpReply reply;
    auto [end, error] = std::from_chars(status_line.data() + 9, status_line.data() + 12, reply.status);
    if (error != std::errc() || end != status_line.data() + 12)
        return Error::format("kvmm sent an invalid status line '{}'", status_line);
    size_t content_length = 0;
    std::string_view headers = line_end == std::string_view::npos ? std::string_view {} : head.substr(line_end + 2);
    while (!headers.empty()) {
        size_t const next = headers.find("\r\n");
        std::string_view header = headers.substr(0, next);
        headers = next == std::string_view::npos ? std::string_view {} : headers.substr(next + 2);
        size_t const colon = header.find(':');
        if (colon == std::string_view::npos || !iequals(header.substr(0, colon), "content-length"))
            continue;
        std::string const value = trim(header.substr(colon + 1));
        auto [value_end, value_error] = std::from_chars(value.data(), value.data() + value.size(), content_length);
        if (value_error != std::errc() || value_end != value.data() + value.size() || content_length > MAX_KVMM_REPLY)
            return Error::format("kvmm sent an invalid Content-Length '{}'", value);
    }
    size_t const body_start = header_end + 4;
    if (bytes.size() - body_start < content_length)
        return std::optional<HttpReply> {};
    reply.body = std::string(bytes.substr(body_start, content_length));
    return std::optional<HttpReply>(std::move(reply));
}

Expected<HttpReply> KvmmClient::request(std::string_view method, std::string_view path, std::string_view body) const {
    // A kvmm whose API does not accept (its backlog full) must not hang the daemon either.
    auto fd = TRY(connect_unix_socket(m_socket_path, m_timeout));
    timeval timeout {};
    timeout.tv_sec = m_timeout.count() / 1000;
    timeout.tv_usec = static_cast<suseconds_t>((m_timeout.count() % 1000) * 1000);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    std::string message =
        fmt::format("{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n", method, path);
    if (!body.empty() || method == "PUT" || method == "PATCH")
        message += fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n", body.size());
    message += "\r\n";
    message += body;
    TRY(send_all(fd.get(), message).with_context(fmt::format("{} {} to '{}'", method, path, m_socket_path)));
    std::string received;
    while (true) {
        if (auto reply = TRY(parse_http_reply(received)))
            return std::move(*reply);
        char buffer[16384];
        ssize_t const count = ::recv(fd.get(), buffer, sizeof(buffer), 0);
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return Error::format("{} {}: kvmm did not answer within {} ms", method, path, m_timeout.count());
        if (count < 0)
            return Error::from_errno(fmt::format("{} {}: reading kvmm's reply", method, path));
        if (count == 0)
            return Error::format("{} {}: kvmm closed the connection before a complete reply", method, path);
        received.append(buffer, static_cast<size_t>(count));
    }
}

Expected<void> KvmmClient::expect_success(std::string_view method, std::string_view path, std::string_view body) const {
    auto reply = TRY(request(method, path, body));
    if (reply.status >= 200 && reply.status < 300)
        return {};
    auto parsed = nlohmann::json::parse(reply.body, nullptr, false);
    std::string fault = reply.body;
    if (parsed.is_object() && parsed.contains("fault_message") && parsed["fault_message"].is_string())
        fault = parsed["fault_message"].get<std::string>();
    return Error::format("kvmm answered {} {} with {}: {}", method, path, reply.status, fault);
}

Expected<nlohmann::json> KvmmClient::describe() const {
    auto reply = TRY(request("GET", "/"));
    auto parsed = nlohmann::json::parse(reply.body, nullptr, false);
    if (reply.status != 200 || !parsed.is_object())
        return Error::format("kvmm answered GET / with {}: '{}'", reply.status, reply.body.substr(0, 200));
    return parsed;
}

Expected<void> KvmmClient::pause() const { return expect_success("PATCH", "/vm", R"({"state": "Paused"})"); }

Expected<void> KvmmClient::create_snapshot(std::string const& snapshot_path, std::string const& memory_path) const {
    nlohmann::json const body { { "snapshot_type", "Full" },
                                { "snapshot_path", snapshot_path },
                                { "mem_file_path", memory_path } };
    return expect_success("PUT", "/snapshot/create", body.dump());
}

Expected<void> KvmmClient::resume() const { return expect_success("PATCH", "/vm", R"({"state": "Resumed"})"); }

Expected<void> KvmmClient::send_ctrl_alt_del() const {
    return expect_success("PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})");
}

Expected<void> KvmmClient::flush_metrics() const {
    return expect_success("PUT", "/actions", R"({"action_type": "FlushMetrics"})");
}

} // namespace kvmm

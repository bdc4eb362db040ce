#include "api/http_message.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace kvmm {

std::string_view HttpRequest::path() const {
    std::string_view view = target;
    return view.substr(0, view.find('?'));
}

std::optional<std::string_view> HttpRequest::header(std::string_view name) const {
    for (auto const& [key, value] : headers) {
        if (key == name)
            return std::string_view(value);
    }
    return std::nullopt;
}

HttpResponse HttpResponse::fault(int status, std::string_view message) {
    nlohmann::json body = { { "fault_message", std::string(message) } };
    // Replace invalid UTF-8 (a path echoed back from the request) rather than throw.
    return { status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), false, {} };
}

std::string_view http_reason_phrase(int status) {
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

std::string serialize_response(HttpResponse const& response, bool keep_alive) {
    std::string out =
        fmt::format("HTTP/1.1 {} {}\r\nServer: {}\r\nConnection: {}\r\n", response.status,
                    http_reason_phrase(response.status), HTTP_SERVER_NAME, keep_alive ? "keep-alive" : "close");
    for (auto const& [name, value] : response.headers)
        out += fmt::format("{}: {}\r\n", name, value);
    bool const bodiless = response.status < 200 || response.status == 204;
    if (!bodiless)
        out += fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n", response.body.size());
    out += "\r\n";
    if (!bodiless)
        out += response.body;
    return out;
}

} // namespace kvmm

#include "manager/protocol.h"

#include "config/json_fields.h"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kvmm {

using nlohmann::json;

Expected<json> parse_request(std::string_view line) {
    auto parsed = parse_json_strict(line);
    if (!parsed)
        return Error::format("request is not valid JSON ({}): '{}'", parsed.error().message(), line.substr(0, 80));
    json request = std::move(*parsed);
    if (!request.is_object())
        return Error::format("request must be a JSON object, got {}", request.type_name());
    auto verb = request.find("verb");
    if (verb == request.end() || !verb->is_string())
        return Error("request has no string field \"verb\"");
    return request;
}

json ok_response(json fields) {
    fields["ok"] = true;
    return fields;
}

json error_response(std::string_view message) { return { { "ok", false }, { "error", message } }; }

std::string encode_line(json const& message) {
    return message.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

Expected<std::string> required_string(json const& request, std::string_view field) {
    auto found = request.find(field);
    if (found == request.end())
        return Error::format("request field \"{}\" is missing", field);
    if (!found->is_string())
        return Error::format("request field \"{}\" must be a string, got {}", field, found->type_name());
    return found->get<std::string>();
}

Expected<std::optional<std::string>> optional_string(json const& request, std::string_view field) {
    if (!request.contains(field) || request.at(std::string(field)).is_null())
        return std::optional<std::string> {};
    return std::optional<std::string>(TRY(required_string(request, field)));
}

Expected<std::optional<bool>> optional_bool(json const& request, std::string_view field) {
    auto found = request.find(field);
    if (found == request.end() || found->is_null())
        return std::optional<bool> {};
    if (!found->is_boolean())
        return Error::format("request field \"{}\" must be true or false, got {}", field, found->type_name());
    return std::optional<bool>(found->get<bool>());
}

Expected<std::optional<uint64_t>> optional_unsigned(json const& request, std::string_view field) {
    auto found = request.find(field);
    if (found == request.end() || found->is_null())
        return std::optional<uint64_t> {};
    if (!found->is_number_unsigned())
        return Error::format("request field \"{}\" must be a non-negative integer, got {}", field, found->dump());
    return std::optional<uint64_t>(found->get<uint64_t>());
}

Expected<std::optional<std::string>> LineBuffer::next_line() {
    size_t const end = m_buffer.find('\n');
    if (end == std::string::npos) {
        if (m_buffer.size() > m_max_line)
            return Error::format("line longer than {} bytes", m_max_line);
        return std::optional<std::string> {};
    }
    if (end > m_max_line)
        return Error::format("line of {} bytes is longer than {} bytes", end, m_max_line);
    std::string line = m_buffer.substr(0, end);
    m_buffer.erase(0, end + 1);
    return std::optional<std::string>(std::move(line));
}

Expected<void> send_all(int fd, std::string_view text) {
    while (!text.empty()) {
        ssize_t const sent = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0)
            return Error::from_errno("send");
        text.remove_prefix(static_cast<size_t>(sent));
    }
    return {};
}

namespace {

using Clock = std::chrono::steady_clock;

// Waits until `fd` is ready for `events` or `deadline` passes; false when the time is up.
bool wait_for(int fd, short events, Clock::time_point deadline) {
    while (true) {
        auto const left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0)
            return false;
        pollfd entry { fd, events, 0 };
        int const ready = ::poll(&entry, 1, static_cast<int>(std::min<int64_t>(left, 60 * 60 * 1000)));
        if (ready > 0)
            return true;
        if (ready < 0 && errno != EINTR)
            return true; // let the following call report the error
    }
}

} // namespace

Expected<void> send_all(int fd, std::string_view text, Clock::time_point deadline) {
    while (!text.empty()) {
        ssize_t const sent = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_for(fd, POLLOUT, deadline))
                return Error("send: the peer did not take the data in time", ETIMEDOUT);
            continue;
        }
        if (sent <= 0)
            return Error::from_errno("send");
        text.remove_prefix(static_cast<size_t>(sent));
    }
    return {};
}

Expected<DaemonClient> DaemonClient::connect(std::string const& socket_path,
                                             std::optional<std::chrono::milliseconds> timeout) {
    if (timeout)
        return DaemonClient(TRY(connect_unix_socket(socket_path, *timeout)));
    return DaemonClient(TRY(connect_unix_socket(socket_path)));
}

Expected<json> DaemonClient::call(json const& request, std::optional<std::chrono::milliseconds> timeout) {
    auto const deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
    if (timeout)
        TRY(send_all(m_fd.get(), encode_line(request), deadline));
    else
        TRY(send_all(m_fd.get(), encode_line(request)));
    while (true) {
        if (auto line = TRY(m_lines.next_line())) {
            json answer = json::parse(*line, nullptr, false);
            if (answer.is_discarded() || !answer.is_object())
                return Error::format("kvmmd sent an answer that is not a JSON object: '{}'", line->substr(0, 80));
            if (answer.value("ok", false) != true)
                return Error(answer.value("error", std::string("kvmmd reported an error without a message")));
            return answer;
        }
        if (timeout && !wait_for(m_fd.get(), POLLIN, deadline))
            return Error(fmt::format("kvmmd did not answer within {} ms", timeout->count()), ETIMEDOUT);
        char buffer[65536];
        ssize_t const received = ::recv(m_fd.get(), buffer, sizeof(buffer), 0);
        if (received < 0 && errno == EINTR)
            continue;
        if (received < 0)
            return Error::from_errno("reading kvmmd's answer");
        if (received == 0)
            return Error("kvmmd closed the connection before answering");
        m_lines.append(std::string_view(buffer, static_cast<size_t>(received)));
    }
}

} // namespace kvmm

// Error: the value every fallible kvmm function returns on failure.
//
// An Error carries a human-readable message that names what was wrong and with
// which value ("kernel image /tmp/k: truncated at byte 512 of 4096"), plus the
// errno it came from, if any. Errors are values: no exception crosses a kvmm
// library boundary. Threading: plain value type, no shared state.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>
#include <utility>

namespace kvmm {

class Error {
public:
    explicit Error(std::string message, int error_number = 0) : m_message(std::move(message)), m_errno(error_number) {}

    // Builds an error from a format string; fmt checks the arguments at compile time.
    template <typename... Args>
    static Error format(fmt::format_string<Args...> format_string, Args&&... args) {
        return Error(fmt::format(format_string, std::forward<Args>(args)...));
    }

    // Builds an error from the current errno: "<what>: <strerror(errno)>".
    static Error from_errno(std::string_view what);
    static Error from_errno(std::string_view what, int error_number);

    std::string const& message() const { return m_message; }
    int error_number() const { return m_errno; }

    // Returns a copy whose message is prefixed with context: "<context>: <message>".
    Error with_context(std::string_view context) const;

private:
    std::string m_message;
    int m_errno { 0 };
};

} // namespace kvmm

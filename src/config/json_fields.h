// JsonFields: strict access to the fields of one JSON object of an API body, in the manner of
// Firecracker's deny_unknown_fields request types: unknown fields, wrong types and out-of-range
// numbers are errors that name the object, the field and the problem. A JSON null counts as an
// absent optional field.
//
// Threading: a view of a json value owned by the caller; one thread.
#pragma once

#include "base/expected.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace kvmm {

class JsonFields {
public:
    // Fails when `value` is not an object or has a field outside `allowed`. `what` names the
    // object in messages ("drive", "machine-config.rate_limiter").
    static Expected<JsonFields> create(nlohmann::json const& value, std::string_view what,
                                       std::initializer_list<std::string_view> allowed);

    bool has(std::string_view key) const;
    bool empty() const { return m_value->empty(); }

    Expected<std::optional<std::string>> string(std::string_view key) const;
    Expected<std::string> required_string(std::string_view key) const;
    Expected<std::optional<bool>> boolean(std::string_view key) const;
    Expected<bool> required_boolean(std::string_view key) const;
    Expected<std::optional<uint64_t>> unsigned_integer(std::string_view key,
                                                       uint64_t max = std::numeric_limits<uint64_t>::max()) const;
    Expected<uint64_t> required_unsigned_integer(std::string_view key,
                                                 uint64_t max = std::numeric_limits<uint64_t>::max()) const;
    // A nested value (any type), or nullptr when absent or null.
    nlohmann::json const* get(std::string_view key) const;

    std::string const& what() const { return m_what; }

private:
    JsonFields(nlohmann::json const& value, std::string what) : m_value(&value), m_what(std::move(what)) {}
    Error missing(std::string_view key) const;

    nlohmann::json const* m_value;
    std::string m_what;
};

// Parses `text` as JSON; the error gives the parser's position and reason. An object with the
// same key twice is refused naming the key: RFC 8259 section 4 leaves duplicate names'
// meaning to each implementation (nlohmann keeps the last), so a body a proxy or a log reader
// sees as one value could configure another.
Expected<nlohmann::json> parse_json_text(std::string_view text);

// The same without the empty-text rule and the "body" wording, for other JSON read from
// clients (the kvmmd control protocol); the error names the duplicate key or the parser's
// reason.
Expected<nlohmann::json> parse_json_strict(std::string_view text);

} // namespace kvmm

#include "config/json_fields.h"

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace kvmm {

Expected<JsonFields> JsonFields::create(nlohmann::json const& value, std::string_view what,
                                        std::initializer_list<std::string_view> allowed) {
    if (!value.is_object())
        return Error::format("{}: expected a JSON object, got {}", what, value.type_name());
    for (auto const& item : value.items()) {
        if (std::find(allowed.begin(), allowed.end(), item.key()) == allowed.end())
            return Error::format("{}: unknown field '{}'", what, item.key());
    }
    return JsonFields(value, std::string(what));
}

bool JsonFields::has(std::string_view key) const { return get(key) != nullptr; }

nlohmann::json const* JsonFields::get(std::string_view key) const {
    auto it = m_value->find(key);
    if (it == m_value->end() || it->is_null())
        return nullptr;
    return &*it;
}

Error JsonFields::missing(std::string_view key) const {
    return Error::format("{}: missing required field '{}'", m_what, key);
}

Expected<std::optional<std::string>> JsonFields::string(std::string_view key) const {
    auto const* value = get(key);
    if (!value)
        return std::optional<std::string>();
    if (!value->is_string())
        return Error::format("{}: field '{}' must be a string, got {}", m_what, key, value->type_name());
    return std::optional<std::string>(value->get<std::string>());
}

Expected<std::string> JsonFields::required_string(std::string_view key) const {
    auto value = TRY(string(key));
    if (!value)
        return missing(key);
    return std::move(*value);
}

Expected<std::optional<bool>> JsonFields::boolean(std::string_view key) const {
    auto const* value = get(key);
    if (!value)
        return std::optional<bool>();
    if (!value->is_boolean())
        return Error::format("{}: field '{}' must be a boolean, got {}", m_what, key, value->type_name());
    return std::optional<bool>(value->get<bool>());
}

Expected<bool> JsonFields::required_boolean(std::string_view key) const {
    auto value = TRY(boolean(key));
    if (!value)
        return missing(key);
    return *value;
}

Expected<std::optional<uint64_t>> JsonFields::unsigned_integer(std::string_view key, uint64_t max) const {
    auto const* value = get(key);
    if (!value)
        return std::optional<uint64_t>();
    if (value->is_number_unsigned()) {
        auto number = value->get<uint64_t>();
        if (number > max)
            return Error::format("{}: field '{}' is {}, above the maximum {}", m_what, key, number, max);
        return std::optional<uint64_t>(number);
    }
    if (value->is_number_integer())
        return Error::format("{}: field '{}' must not be negative, got {}", m_what, key, value->get<int64_t>());
    if (value->is_number_float())
        return Error::format("{}: field '{}' must be an unsigned integer, got {}", m_what, key, value->get<double>());
    return Error::format("{}: field '{}' must be an unsigned integer, got {}", m_what, key, value->type_name());
}

Expected<uint64_t> JsonFields::required_unsigned_integer(std::string_view key, uint64_t max) const {
    auto value = TRY(unsigned_integer(key, max));
    if (!value)
        return missing(key);
    return *value;
}

namespace {

// Parses `text`, refusing an object that holds a key twice. nlohmann's parser callback sees
// every object start, key and object end in document order, so one set of keys per open
// object is enough; the first duplicate is remembered and the parse result is then refused.
Expected<nlohmann::json> parse_refusing_duplicate_keys(std::string_view text, std::string_view malformed) {
    std::vector<std::set<std::string>> open_objects;
    std::optional<std::string> duplicate;
    auto const callback = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        switch (event) {
        case nlohmann::json::parse_event_t::object_start:
            open_objects.emplace_back();
            break;
        case nlohmann::json::parse_event_t::object_end:
            if (!open_objects.empty())
                open_objects.pop_back();
            break;
        case nlohmann::json::parse_event_t::key:
            if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second && !duplicate)
                duplicate = parsed.get<std::string>();
            break;
        default:
            break;
        }
        return true;
    };
    // nlohmann reports malformed input by exception; it stops here, at the library boundary.
    nlohmann::json document;
    try {
        document = nlohmann::json::parse(text, callback);
    } catch (nlohmann::json::exception const& exception) {
        return Error::format("{}: {}", malformed, exception.what());
    }
    if (duplicate)
        return Error::format("duplicate key '{}' in a JSON object; each key may appear once", *duplicate);
    return document;
}

} // namespace

Expected<nlohmann::json> parse_json_text(std::string_view text) {
    if (text.empty())
        return Error("empty request body; a JSON object is required");
    return parse_refusing_duplicate_keys(text, "malformed JSON body");
}

Expected<nlohmann::json> parse_json_strict(std::string_view text) {
    return parse_refusing_duplicate_keys(text, "malformed JSON");
}

} // namespace kvmm

#include "base/path.h"

#include <fmt/format.h>

namespace kvmm {

std::string escape_control_characters(std::string_view text) {
    std::string escaped;
    escaped.reserve(text.size());
    for (char character : text) {
        if (is_control_character(character) || character == '\\')
            escaped += fmt::format("\\x{:02x}", static_cast<unsigned char>(character));
        else
            escaped += character;
    }
    return escaped;
}

Expected<void> check_path_characters(std::string_view path, std::string_view what) {
    for (size_t offset = 0; offset < path.size(); ++offset) {
        if (is_control_character(path[offset]))
            return Error::format("{}: path '{}' contains the control character 0x{:02x} at byte {}; paths may not "
                                 "contain NUL or other control characters",
                                 what, escape_control_characters(path), static_cast<unsigned char>(path[offset]),
                                 offset);
    }
    return {};
}

} // namespace kvmm

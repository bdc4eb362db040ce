// The one rule for host paths that come from outside kvmm (API bodies, the JSON config file,
// command-line flags): no control characters. The kernel ends a path at its first NUL byte, so
// "/etc/shadow\0.img" would open /etc/shadow while every check and log line saw the whole
// string; the other control characters (0x01-0x1f, 0x7f) have no place in a file or socket
// name either and would let a path forge log lines. Firecracker refuses NUL as well.
//
// Threading: pure functions.
#pragma once

#include "base/expected.h"

#include <string>
#include <string_view>

namespace kvmm {

// True for the bytes a path may not contain: 0x00-0x1f and 0x7f.
constexpr bool is_control_character(char character) {
    auto const byte = static_cast<unsigned char>(character);
    return byte < 0x20 || byte == 0x7f;
}

// Fails when `path` contains a control character; the message starts with `what` (the field or
// flag, e.g. "drive: field 'path_on_host'" or "--kernel") and shows the path with the offending
// bytes escaped, so the message stays one printable line.
Expected<void> check_path_characters(std::string_view path, std::string_view what);

// `text` with every control character and backslash written as \xNN: safe to print on one line.
std::string escape_control_characters(std::string_view text);

} // namespace kvmm

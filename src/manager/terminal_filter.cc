#include "manager/terminal_filter.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace kvmm {
namespace {

constexpr unsigned char ESC = 0x1b;

bool is_control(unsigned char byte) { return byte < 0x20 || byte == 0x7f; }

std::string hex_byte(unsigned char byte) { return fmt::format("\\x{:02x}", byte); }

// Continuation bytes after a UTF-8 lead byte, 0 for a byte that cannot start a sequence
// (RFC 3629 section 4: C0, C1 and F5..FF never occur; 80..BF only continue).
size_t utf8_continuations(unsigned char lead) {
    if (lead >= 0xc2 && lead <= 0xdf)
        return 1;
    if (lead >= 0xe0 && lead <= 0xef)
        return 2;
    if (lead >= 0xf0 && lead <= 0xf4)
        return 3;
    return 0;
}

// RFC 3629's table: the second byte's range after the leads that restrict it (no overlong
// forms, no surrogates, nothing above U+10FFFF); after other leads 80..BF.
bool valid_second_byte(unsigned char lead, unsigned char second) {
    switch (lead) {
    case 0xe0:
        return second >= 0xa0 && second <= 0xbf;
    case 0xed:
        return second >= 0x80 && second <= 0x9f;
    case 0xf0:
        return second >= 0x90 && second <= 0xbf;
    case 0xf4:
        return second >= 0x80 && second <= 0x8f;
    default:
        return (second & 0xc0) == 0x80;
    }
}

bool digits_and_separators(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || c == ';' || c == ':'; });
}

// The private modes Console mode lets a guest set; reset_sequence() restores each of them.
bool allowed_private_modes(std::string_view list) {
    constexpr std::array<std::string_view, 6> ALLOWED { "1", "7", "25", "47", "1047", "1049" };
    while (true) {
        size_t const separator = list.find(';');
        auto const mode = list.substr(0, separator);
        if (std::find(ALLOWED.begin(), ALLOWED.end(), mode) == ALLOWED.end())
            return false;
        if (separator == std::string_view::npos)
            return true;
        list.remove_prefix(separator + 1);
    }
}

} // namespace

std::string caret_notation(unsigned char control) {
    if (control == 0x7f)
        return "^?";
    return std::string { '^', static_cast<char>(control + 0x40) };
}

std::string_view TerminalFilter::reset_sequence() {
    // Main screen (restoring its cursor), then colours, scroll region, insert mode, normal
    // cursor keys, autowrap on and a visible cursor: the states Console mode lets through.
    return "\x1b[?1049l\x1b[0m\x1b[r\x1b[4l\x1b[?1l\x1b[?7h\x1b[?25h";
}

bool TerminalFilter::csi_allowed(std::string_view body) const {
    // body: parameters (0x30..0x3F), intermediates (0x20..0x2F), final (0x40..0x7E); ECMA-48 5.4.
    char const final_byte = body.back();
    std::string_view const parameters = body.substr(0, body.size() - 1);
    if (final_byte == 'm' && digits_and_separators(parameters))
        return true; // SGR: colours and text attributes
    if (m_mode == Mode::Log)
        return false;
    if (!parameters.empty() && parameters.front() == '?')
        return (final_byte == 'h' || final_byte == 'l') && allowed_private_modes(parameters.substr(1));
    if (!digits_and_separators(parameters))
        return false; // other private prefixes ('<', '=', '>') and intermediates: reports, settings
    if (final_byte == 'h' || final_byte == 'l')
        return parameters == "4"; // insert/replace mode
    if (final_byte == 'J' && parameters == "3")
        return false; // erases the terminal's scrollback, the host's history
    constexpr std::string_view EDITING_FINALS = "ABCDEFGHJKXdf@PLMSTr";
    return EDITING_FINALS.find(final_byte) != std::string_view::npos;
}

void TerminalFilter::show_held(std::string& out) {
    for (char const c : m_held) {
        auto const byte = static_cast<unsigned char>(c);
        if (is_control(byte))
            out += caret_notation(byte);
        else if (byte >= 0x80)
            out += hex_byte(byte);
        else
            out += c;
    }
    m_held.clear();
    m_state = State::Text;
}

void TerminalFilter::end_csi(std::string& out) {
    if (csi_allowed(std::string_view(m_held).substr(2))) {
        out += m_held;
        m_held.clear();
        m_state = State::Text;
        return;
    }
    show_held(out);
}

void TerminalFilter::text_byte(unsigned char byte, std::string& out) {
    if (byte == '\n' || byte == '\t') {
        out += static_cast<char>(byte);
    } else if (byte == '\r') {
        if (m_mode == Mode::Console)
            out += '\r';
        else
            m_state = State::CarriageReturn;
    } else if (byte == ESC) {
        m_held.assign(1, static_cast<char>(ESC));
        m_state = State::Escape;
    } else if (is_control(byte)) {
        out += caret_notation(byte);
    } else if (byte < 0x80) {
        out += static_cast<char>(byte);
    } else if (size_t const continuations = utf8_continuations(byte); continuations > 0) {
        m_held.assign(1, static_cast<char>(byte));
        m_utf8_remaining = continuations;
        m_state = State::Utf8;
    } else {
        out += hex_byte(byte);
    }
}

std::string TerminalFilter::feed(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    for (char const c : bytes) {
        auto const byte = static_cast<unsigned char>(c);
        switch (m_state) {
        case State::Text:
            text_byte(byte, out);
            break;
        case State::CarriageReturn:
            if (byte == '\r')
                break; // CR CR LF, as some serial drivers write: one line end
            m_state = State::Text;
            if (byte == '\n')
                out += "\r\n";
            else {
                out += caret_notation('\r'); // a lone CR would overwrite the line shown
                text_byte(byte, out);
            }
            break;
        case State::Escape:
            if (byte == '[') {
                m_held += c;
                m_state = State::Csi;
            } else {
                show_held(out);
                text_byte(byte, out);
            }
            break;
        case State::Csi:
            if (byte >= 0x40 && byte <= 0x7e) {
                m_held += c;
                end_csi(out);
            } else if (byte >= 0x20 && byte <= 0x3f) {
                m_held += c;
                if (m_held.size() > MAX_SEQUENCE)
                    show_held(out);
            } else {
                show_held(out); // a control or non-ASCII byte inside: not a sequence
                text_byte(byte, out);
            }
            break;
        case State::Utf8: {
            bool const continues = m_held.size() == 1 ? valid_second_byte(static_cast<unsigned char>(m_held[0]), byte)
                                                      : (byte & 0xc0) == 0x80;
            if (!continues) {
                show_held(out);
                text_byte(byte, out);
                break;
            }
            if (m_held.size() == 1 && static_cast<unsigned char>(m_held[0]) == 0xc2 && byte <= 0x9f) {
                out += hex_byte(byte); // U+0080..U+009F: a C1 control such as CSI (U+009B)
                m_held.clear();
                m_state = State::Text;
                break;
            }
            m_held += c;
            if (--m_utf8_remaining == 0) {
                out += m_held;
                m_held.clear();
                m_state = State::Text;
            }
            break;
        }
        }
    }
    return out;
}

std::string TerminalFilter::finish() {
    std::string out;
    if (m_state == State::CarriageReturn)
        out += caret_notation('\r');
    show_held(out);
    return out;
}

} // namespace kvmm

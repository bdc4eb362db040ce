// TerminalFilter: makes guest console output safe to show on the administrator's terminal.
//
// Why: a guest writes whatever bytes it likes to its console, and `kvmmctl logs` / `kvmmctl
// console` used to copy them to the terminal as they were. Escape sequences there act on the
// administrator's terminal, not the guest's: OSC 0/2 sets the window title, OSC 52 writes the
// clipboard (a command pasted later), OSC 8 plants links, DCS/APC/PM/SOS strings reach terminal
// extensions, report requests (CSI 6n, CSI c, CSI 21t) make the terminal type an answer into
// whatever reads its input next - the host shell after `logs` - and cursor movement or a lone
// CR can overwrite text to fake a prompt or hide a line.
//
// What passes unchanged: printable text, valid UTF-8, newline and tab; SGR colour sequences
// (CSI params 'm'); CR in Console mode, and in Log mode only right before a newline (serial
// consoles end lines with CR LF). In Console mode also the CSI sequences a shell's line editor
// and full-screen programs need, none of which makes the terminal answer or leaves state
// behind that reset_sequence() does not undo: cursor movement (A-H, d, f), erase (J, K, X),
// insert/delete (@, P, L, M), scroll (S, T, r), and the private modes ?1 (cursor keys), ?7
// (autowrap), ?25 (cursor visible) and ?47/?1047/?1049 (alternate screen).
// Everything else is shown, not obeyed: a control character in caret notation (ESC as "^[",
// BEL as "^G", DEL as "^?"), so a refused sequence appears as its text ("^[]52;c;..."); a C1
// control written as UTF-8 (U+0080..U+009F, which some terminals obey like ESC sequences) and a
// byte that is not valid UTF-8 as "\xNN".
//
// Output is streamed: feed() takes the bytes as they arrive, however the sequences are split
// across chunks, and keeps an incomplete sequence until the rest comes (finish() shows what is
// left at the end). A sequence longer than MAX_SEQUENCE bytes is shown as text.
//
// Threading: a value; one thread at a time.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvmm {

class TerminalFilter {
public:
    enum class Mode {
        Log,     // kvmmctl logs: text and colour only
        Console, // kvmmctl console: also what interactive line editing and full-screen programs use
    };
    static constexpr size_t MAX_SEQUENCE = 64;

    explicit TerminalFilter(Mode mode) : m_mode(mode) {}

    // The safe rendering of `bytes`, continuing whatever sequence the previous call left open.
    std::string feed(std::string_view bytes);
    // Shows what is still held (an unfinished sequence) as text; the filter starts afresh.
    std::string finish();

    // What to write to the terminal when a console session ends: undoes every state the
    // Console mode lets through (colours, alternate screen, hidden cursor, scroll region,
    // cursor-key mode, insert mode), so the host shell gets its terminal back as it was.
    static std::string_view reset_sequence();

private:
    enum class State { Text, Escape, Csi, Utf8, CarriageReturn };

    void text_byte(unsigned char byte, std::string& out);
    void end_csi(std::string& out);
    void show_held(std::string& out);
    bool csi_allowed(std::string_view body) const;

    Mode m_mode;
    State m_state { State::Text };
    std::string m_held;            // the bytes of the sequence in progress
    size_t m_utf8_remaining { 0 }; // continuation bytes still expected
};

// Caret notation of a C0 control or DEL: 0x1b -> "^[", 0x07 -> "^G", 0x7f -> "^?".
std::string caret_notation(unsigned char control);

} // namespace kvmm

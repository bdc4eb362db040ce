// TerminalFilter on guest console bytes: whatever arrives, in whatever chunks, the output holds
// no ESC that does not start an allowed CSI sequence and no other control character but the
// ones each mode lets through; and feeding must never crash or grow without bound.
#include "manager/terminal_filter.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    if (size == 0)
        return 0;
    auto const mode = (data[0] & 1) ? kvmm::TerminalFilter::Mode::Console : kvmm::TerminalFilter::Mode::Log;
    size_t const chunk = 1 + (data[0] >> 1) % 17;
    std::string_view const bytes(reinterpret_cast<char const*>(data + 1), size - 1);
    kvmm::TerminalFilter filter(mode);
    std::string out;
    for (size_t offset = 0; offset < bytes.size(); offset += chunk)
        out += filter.feed(bytes.substr(offset, chunk));
    out += filter.finish();
    // Every rendered byte is at most "\xNN" (4 bytes) per input byte.
    if (out.size() > 4 * bytes.size())
        std::abort();
    for (size_t i = 0; i < out.size(); ++i) {
        auto const byte = static_cast<unsigned char>(out[i]);
        if (byte == 0x1b && (i + 1 >= out.size() || out[i + 1] != '['))
            std::abort(); // only CSI sequences leave as escapes
        bool const control = byte < 0x20 || byte == 0x7f;
        bool const allowed = byte == '\n' || byte == '\t' || byte == '\r' || byte == 0x1b;
        if (control && !allowed)
            std::abort();
    }
    return 0;
}

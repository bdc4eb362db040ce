#include "devices/legacy/debug_console.h"

#include <algorithm>

namespace kvmm {

void DebugConsoleState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.end_section();
}

Expected<DebugConsoleState> DebugConsoleState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    TRY(reader.end_section());
    return DebugConsoleState {};
}

void DebugConsole::read(uint64_t, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), 0);
    if (!data.empty())
        data[0] = DEBUG_CONSOLE_READBACK;
}

void DebugConsole::write(uint64_t offset, std::span<uint8_t const> data) {
    if (offset != 0 || data.size() != 1)
        return;
    std::string finished;
    {
        MutexLock guard(m_lock);
        char const byte = static_cast<char>(data[0]);
        if (byte == '\n') {
            finished.swap(m_line);
        } else if (byte != '\r') {
            bool const printable = byte == '\t' || (static_cast<unsigned char>(byte) >= 0x20 && byte != 0x7f);
            m_line.push_back(printable ? byte : '?');
            if (m_line.size() >= MAX_LINE)
                finished.swap(m_line);
        }
    }
    // Outside the lock: the callback may log, which may take time.
    if (!finished.empty())
        m_on_line(finished);
}

} // namespace kvmm

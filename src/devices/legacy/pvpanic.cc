#include "devices/legacy/pvpanic.h"

namespace kvmm {

void Pvpanic::read(uint64_t offset, std::span<uint8_t> data) {
    for (auto& byte : data)
        byte = 0;
    if (offset == 0 && !data.empty())
        data[0] = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED; // the events we understand
}

void Pvpanic::write(uint64_t offset, std::span<uint8_t const> data) {
    if (offset != 0 || data.empty())
        return;
    if (data[0] & PVPANIC_PANICKED)
        m_on_event(Event::Panicked);
    else if (data[0] & PVPANIC_CRASH_LOADED)
        m_on_event(Event::CrashLoaded);
}

void PvpanicState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.end_section();
}

Expected<PvpanicState> PvpanicState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    TRY(reader.end_section());
    return PvpanicState {};
}

} // namespace kvmm

#include "devices/legacy/power_control.h"

namespace kvmm {

void PowerControl::read(uint64_t, std::span<uint8_t> data) {
    // Sleep status: WAK_STS (bit 7) stays clear: we never come back from a sleep state.
    for (auto& byte : data)
        byte = 0;
}

void PowerControl::write(uint64_t offset, std::span<uint8_t const> data) {
    if (offset != 0 || data.empty())
        return;
    uint8_t const value = data[0];
    if (value == RESET_VALUE) {
        m_on_event(PowerEvent::Reset);
        return;
    }
    uint8_t const sleep_type = (value >> SLEEP_TYPE_SHIFT) & SLEEP_TYPE_MASK;
    if ((value & SLEEP_ENABLE_BIT) && sleep_type == POWER_OFF_SLEEP_TYPE)
        m_on_event(PowerEvent::PowerOff);
}

void PowerControlState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.end_section();
}

Expected<PowerControlState> PowerControlState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    TRY(reader.end_section());
    return PowerControlState {};
}

} // namespace kvmm

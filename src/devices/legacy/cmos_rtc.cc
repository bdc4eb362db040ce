#include "devices/legacy/cmos_rtc.h"

namespace kvmm {

namespace {

constexpr uint8_t SECONDS = 0x00;
constexpr uint8_t MINUTES = 0x02;
constexpr uint8_t HOURS = 0x04;
constexpr uint8_t WEEKDAY = 0x06;
constexpr uint8_t DAY_OF_MONTH = 0x07;
constexpr uint8_t MONTH = 0x08;
constexpr uint8_t YEAR = 0x09;
constexpr uint8_t REGISTER_A = 0x0a;
constexpr uint8_t REGISTER_B = 0x0b;
constexpr uint8_t REGISTER_C = 0x0c;
constexpr uint8_t REGISTER_D = 0x0d;
constexpr uint8_t CENTURY = 0x32;

constexpr uint8_t B_24_HOUR = 0x02;
constexpr uint8_t B_BINARY = 0x04;
constexpr uint8_t D_VALID_RAM_AND_TIME = 0x80;
// Register A: 32.768 kHz time base (DV = 010), 1024 Hz rate select (0110); UIP (bit 7) stays 0.
constexpr uint8_t A_DEFAULT = 0x26;
constexpr uint8_t A_UPDATE_IN_PROGRESS = 0x80;

bool is_time_register(uint8_t index) {
    switch (index) {
    case SECONDS:
    case MINUTES:
    case HOURS:
    case WEEKDAY:
    case DAY_OF_MONTH:
    case MONTH:
    case YEAR:
    case CENTURY:
        return true;
    default:
        return false;
    }
}

} // namespace

CmosRtc::CmosRtc(std::function<std::time_t()> now) : m_now(std::move(now)) {
    if (!m_now)
        m_now = [] { return std::time(nullptr); };
    m_ram[REGISTER_A] = A_DEFAULT;
    m_ram[REGISTER_B] = B_24_HOUR; // BCD, 24-hour: what a PC BIOS leaves behind
}

void CmosRtc::read(uint64_t offset, std::span<uint8_t> data) {
    MutexLock guard(m_lock);
    for (auto& byte : data)
        byte = 0;
    if (data.empty())
        return;
    data[0] = offset == 1 ? read_register(m_index) : 0xff;
}

void CmosRtc::write(uint64_t offset, std::span<uint8_t const> data) {
    if (data.empty())
        return;
    MutexLock guard(m_lock);
    if (offset == 0) {
        m_index = data[0] & 0x7f; // bit 7 is the NMI mask, not part of the index
        return;
    }
    if (offset != 1)
        return;
    if (is_time_register(m_index))
        return; // the time follows the host
    switch (m_index) {
    case REGISTER_C:
    case REGISTER_D:
        return; // read-only
    case REGISTER_A:
        m_ram[REGISTER_A] = data[0] & static_cast<uint8_t>(~A_UPDATE_IN_PROGRESS); // UIP is read-only
        return;
    default:
        m_ram[m_index] = data[0];
        return;
    }
}

uint8_t CmosRtc::encode(int value) const {
    // Register B bit 2 (DM): 1 = binary, 0 = BCD.
    if (m_ram[REGISTER_B] & B_BINARY)
        return static_cast<uint8_t>(value);
    return static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

uint8_t CmosRtc::read_register(uint8_t index) const {
    if (is_time_register(index))
        return read_time_register(index);
    switch (index) {
    case REGISTER_C:
        return 0;
    case REGISTER_D:
        return D_VALID_RAM_AND_TIME;
    default:
        return m_ram[index];
    }
}

uint8_t CmosRtc::read_time_register(uint8_t index) const {
    // Each read samples the clock afresh; the guest reads the registers twice and compares,
    // as the MC146818A datasheet advises for reads not synchronised to the update cycle.
    std::time_t const now = m_now();
    std::tm time {};
    if (gmtime_r(&now, &time) == nullptr)
        return 0;
    switch (index) {
    case SECONDS:
        return encode(time.tm_sec);
    case MINUTES:
        return encode(time.tm_min);
    case HOURS: {
        if (m_ram[REGISTER_B] & B_24_HOUR)
            return encode(time.tm_hour);
        // 12-hour mode: 12, 1..11 with bit 7 set for PM.
        int hour = time.tm_hour % 12;
        if (hour == 0)
            hour = 12;
        return static_cast<uint8_t>(encode(hour) | (time.tm_hour >= 12 ? 0x80 : 0));
    }
    case WEEKDAY:
        return encode(time.tm_wday + 1); // 1 = Sunday
    case DAY_OF_MONTH:
        return encode(time.tm_mday);
    case MONTH:
        return encode(time.tm_mon + 1);
    case YEAR:
        return encode((time.tm_year + 1900) % 100);
    case CENTURY:
        return encode((time.tm_year + 1900) / 100 % 100);
    default:
        return 0;
    }
}

void CmosRtcState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u8(index);
    writer.bytes(std::span<uint8_t const>(ram));
    writer.end_section();
}

Expected<CmosRtcState> CmosRtcState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    CmosRtcState state;
    state.index = TRY(reader.u8("index"));
    auto const ram = TRY(reader.bytes("ram", CMOS_RAM_SIZE));
    if (ram.size() != CMOS_RAM_SIZE)
        return Error::format("saved state cmos-rtc/ram: {} bytes, not {}", ram.size(), CMOS_RAM_SIZE);
    for (size_t i = 0; i < CMOS_RAM_SIZE; ++i)
        state.ram[i] = static_cast<uint8_t>(ram[i]);
    TRY(reader.end_section());
    return state;
}

CmosRtcState CmosRtc::save() const {
    MutexLock guard(m_lock);
    return CmosRtcState { m_index, m_ram };
}

Expected<void> CmosRtc::restore(CmosRtcState const& state) {
    if (state.index >= CMOS_RAM_SIZE)
        return Error::format("cmos-rtc state: index {:#04x} is past the {}-byte RAM", state.index, CMOS_RAM_SIZE);
    for (size_t i = 0; i < CMOS_RAM_SIZE; ++i) {
        auto const index = static_cast<uint8_t>(i);
        bool const never_stored = is_time_register(index) || index == REGISTER_C || index == REGISTER_D;
        if (never_stored && state.ram[i] != 0)
            return Error::format("cmos-rtc state: ram[{:#04x}] is {:#04x}, but the clock stores nothing there", index,
                                 state.ram[i]);
    }
    if (state.ram[REGISTER_A] & A_UPDATE_IN_PROGRESS)
        return Error::format("cmos-rtc state: ram[{:#04x}] (register A) {:#04x} has the read-only update-in-progress "
                             "bit set",
                             REGISTER_A, state.ram[REGISTER_A]);
    MutexLock guard(m_lock);
    m_index = state.index;
    m_ram = state.ram;
    return {};
}

} // namespace kvmm

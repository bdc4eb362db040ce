// CmosRtc: the MC146818-compatible real-time clock and CMOS RAM at ports 0x70
// (index; bit 7 masks NMIs) and 0x71 (data).
//
// Time registers (seconds 0x00, minutes 0x02, hours 0x04, weekday 0x06, day
// 0x07, month 0x08, year 0x09, century 0x32) are computed from the clock
// function (host UTC by default) on every read, in BCD or binary and 12- or
// 24-hour form per register B (MC146818A datasheet, "Register B"). Register A
// never shows an update in progress, register D reports valid RAM and time,
// register C reads 0: no alarm or periodic interrupts are generated. Writes to
// the time registers are accepted and ignored: the guest's clock follows the
// host's. All other bytes of the 128-byte CMOS RAM are plain storage.
//
// Threading: one mutex guards index and RAM. save() and restore() take it too;
// they run while the VM is paused.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "base/thread_annotations.h"
#include "devices/bus/bus_device.h"

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>
#include <string_view>

namespace kvmm {

inline constexpr size_t CMOS_RAM_SIZE = 128;

// The clock's saved state (docs/ARCHITECTURE.md "Saved state"): the index register and the
// 128 bytes of CMOS RAM, which include registers A and B (rate select, 12/24-hour and
// BCD/binary mode, the alarm/periodic/update interrupt enables a guest may set) and the alarm
// registers 0x01/0x03/0x05 as plain storage. The time is not part of it: the time registers
// are computed from the host's clock on every read, so after a restore (on this host or
// another) the guest reads that host's current UTC; their RAM bytes, like those of the
// read-only registers C and D, always hold 0.
struct CmosRtcState {
    static constexpr std::string_view SECTION = "cmos-rtc";
    static constexpr uint32_t VERSION = 1;

    uint8_t index { 0 }; // 0x00-0x7F; the NMI mask bit written with it is not kept
    std::array<uint8_t, CMOS_RAM_SIZE> ram {};

    bool operator==(CmosRtcState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<CmosRtcState> decode(StateReader& reader);
};

class CmosRtc final : public BusDevice {
public:
    explicit CmosRtc(std::function<std::time_t()> now = nullptr);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    CmosRtcState save() const;
    // Replaces the index and the RAM. Refused, naming the field and changing nothing, when
    // the index is past the RAM or a byte holds what the clock never stores: a value in a
    // time register or in register C or D, or the update-in-progress bit of register A.
    Expected<void> restore(CmosRtcState const& state);

private:
    uint8_t read_register(uint8_t index) const REQUIRES(m_lock);
    uint8_t read_time_register(uint8_t index) const REQUIRES(m_lock);
    uint8_t encode(int value) const REQUIRES(m_lock);

    std::function<std::time_t()> m_now;
    mutable Mutex m_lock;
    std::array<uint8_t, CMOS_RAM_SIZE> m_ram GUARDED_BY(m_lock) {};
    uint8_t m_index GUARDED_BY(m_lock) { 0 };
};

} // namespace kvmm

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
// Threading: one mutex guards index and RAM.
#pragma once

#include "devices/bus/bus_device.h"

#include <array>
#include <ctime>
#include <functional>
#include <mutex>

namespace kvmm {

class CmosRtc final : public BusDevice {
public:
    explicit CmosRtc(std::function<std::time_t()> now = nullptr);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

private:
    uint8_t read_register(uint8_t index) const;
    uint8_t read_time_register(uint8_t index) const;
    uint8_t encode(int value) const;

    std::function<std::time_t()> m_now;
    std::mutex m_lock;
    std::array<uint8_t, 128> m_ram {};
    uint8_t m_index { 0 };
};

} // namespace kvmm

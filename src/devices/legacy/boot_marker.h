// BootMarker: a debug port (BOOT_MARKER_PORT, one byte) a guest writes to say
// "I got here": writing BOOT_MARKER_VALUE logs how long after kvmm's start it
// happened, so boot time can be read off the log without guessing from
// console output. Other values are ignored; reads return 0.
//
// Threading: the counter is atomic; logging is thread-safe.
#pragma once

#include "devices/bus/bus_device.h"

#include <atomic>
#include <cstdint>

namespace kvmm {

inline constexpr uint16_t BOOT_MARKER_PORT = 0x440;
inline constexpr uint8_t BOOT_MARKER_VALUE = 123;

class BootMarker final : public BusDevice {
public:
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    uint32_t marker_count() const { return m_count.load(); }

private:
    std::atomic<uint32_t> m_count { 0 };
};

} // namespace kvmm

// BootMarker: a debug port (BOOT_MARKER_PORT, one byte) a guest writes to say
// "I got here": writing BOOT_MARKER_VALUE logs how long after kvmm's start it
// happened, so boot time can be read off the log without guessing from
// console output. Other values are ignored; reads return 0.
//
// Threading: the counter is atomic; logging is thread-safe. save() and
// restore() run while the VM is paused, when no vCPU writes the port.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "devices/bus/bus_device.h"

#include <atomic>
#include <cstdint>
#include <string_view>

namespace kvmm {

// The boot marker's saved state: how many markers the guest has written, so that a restored
// guest's next marker is logged with the next number. The times logged are measured from the
// start of the kvmm process that logs them and are not state.
struct BootMarkerState {
    static constexpr std::string_view SECTION = "boot-marker";
    static constexpr uint32_t VERSION = 1;

    uint32_t markers_seen { 0 };

    bool operator==(BootMarkerState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<BootMarkerState> decode(StateReader& reader);
};

inline constexpr uint16_t BOOT_MARKER_PORT = 0x440;
inline constexpr uint8_t BOOT_MARKER_VALUE = 123;

class BootMarker final : public BusDevice {
public:
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    uint32_t marker_count() const { return m_count.load(); }

    BootMarkerState save() const { return BootMarkerState { m_count.load() }; }
    // Every count is valid: the counter wraps like any u32.
    Expected<void> restore(BootMarkerState const& state) {
        m_count.store(state.markers_seen);
        return {};
    }

private:
    std::atomic<uint32_t> m_count { 0 };
};

} // namespace kvmm

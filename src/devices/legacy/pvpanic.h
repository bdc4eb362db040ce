// Pvpanic: the guest's way to say "my kernel panicked" before it reboots or
// halts, so the VMM can report a dead guest instead of a clean reset.
//
// The register layout is QEMU's pvpanic (docs/specs/pvpanic.rst), which Linux
// drives with pvpanic-mmio, bound to the ACPI device "QEMU0001" that the DSDT
// declares with PVPANIC_MMIO_ADDRESS: reading the byte tells the guest which
// events are supported; writing PANICKED (bit 0) reports a panic, CRASH_LOADED
// (bit 1) that a crash kernel took over. Other bits are ignored.
//
// Threading: the callback runs on the reporting vCPU's thread. save() and
// restore() touch nothing and may run on any thread.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "devices/bus/bus_device.h"

#include <cstdint>
#include <functional>
#include <string_view>

namespace kvmm {

// Pvpanic's saved state is empty: the register the guest reads is a constant and an event is
// reported the moment it is written, so nothing is left to carry. The section still exists so
// that a machine's state lists the device and a later version that keeps something (say, the
// events seen) is told apart from this one.
struct PvpanicState {
    static constexpr std::string_view SECTION = "pvpanic";
    static constexpr uint32_t VERSION = 1;

    bool operator==(PvpanicState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<PvpanicState> decode(StateReader& reader);
};

inline constexpr uint64_t PVPANIC_MMIO_ADDRESS = 0xcfff'f000; // just below the virtio-mmio windows
inline constexpr uint64_t PVPANIC_MMIO_LENGTH = 1;
inline constexpr uint8_t PVPANIC_PANICKED = 1 << 0;
inline constexpr uint8_t PVPANIC_CRASH_LOADED = 1 << 1;

class Pvpanic final : public BusDevice {
public:
    enum class Event { Panicked, CrashLoaded };
    explicit Pvpanic(std::function<void(Event)> on_event) : m_on_event(std::move(on_event)) {}

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    PvpanicState save() const { return {}; }
    Expected<void> restore(PvpanicState const&) { return {}; }

private:
    std::function<void(Event)> m_on_event;
};

} // namespace kvmm

// Pvpanic: the guest's way to say "my kernel panicked" before it reboots or
// halts, so the VMM can report a dead guest instead of a clean reset.
//
// The register layout is QEMU's pvpanic (docs/specs/pvpanic.rst), which Linux
// drives with pvpanic-mmio, bound to the ACPI device "QEMU0001" that the DSDT
// declares with PVPANIC_MMIO_ADDRESS: reading the byte tells the guest which
// events are supported; writing PANICKED (bit 0) reports a panic, CRASH_LOADED
// (bit 1) that a crash kernel took over. Other bits are ignored.
//
// Threading: the callback runs on the reporting vCPU's thread.
#pragma once

#include "devices/bus/bus_device.h"

#include <cstdint>
#include <functional>

namespace kvmm {

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

private:
    std::function<void(Event)> m_on_event;
};

} // namespace kvmm

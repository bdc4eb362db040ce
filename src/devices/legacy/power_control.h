// PowerControl: the ACPI hardware-reduced sleep control and reset register,
// one byte at POWER_CONTROL_PORT, referenced by the FADT (ACPI 6.5 sections
// 4.8.3.7 "Sleep Control and Status Registers" and 4.8.3.6 "Reset Register").
//
// A write with SLP_EN set and SLP_TYP equal to the DSDT's \_S5_ value powers
// off; a write of exactly RESET_VALUE resets; anything else is ignored (other
// sleep states are not supported, so the guest simply keeps running).
//
// Threading: stateless apart from the callback, which runs on the vCPU thread;
// save() and restore() touch nothing and may run on any thread.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "devices/bus/bus_device.h"

#include <cstdint>
#include <functional>
#include <string_view>

namespace kvmm {

inline constexpr uint16_t POWER_CONTROL_PORT = 0x600;
inline constexpr uint8_t SLEEP_ENABLE_BIT = 1 << 5;
inline constexpr uint8_t SLEEP_TYPE_SHIFT = 2;
inline constexpr uint8_t SLEEP_TYPE_MASK = 0x7;
inline constexpr uint8_t POWER_OFF_SLEEP_TYPE = 5; // \_S5_ in the DSDT
// RESET_VALUE has SLP_EN clear, so it can never be mistaken for a sleep request.
inline constexpr uint8_t RESET_VALUE = 0x01;

enum class PowerEvent { PowerOff, Reset };

// PowerControl's saved state is empty: the sleep status reads 0 and a write acts at once, so
// there is nothing to carry. The section still exists so that a machine's state lists the
// device and a later version with state (other sleep states, say) is told apart from this one.
struct PowerControlState {
    static constexpr std::string_view SECTION = "power-control";
    static constexpr uint32_t VERSION = 1;

    bool operator==(PowerControlState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<PowerControlState> decode(StateReader& reader);
};

class PowerControl final : public BusDevice {
public:
    explicit PowerControl(std::function<void(PowerEvent)> on_event) : m_on_event(std::move(on_event)) {}

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    PowerControlState save() const { return {}; }
    Expected<void> restore(PowerControlState const&) { return {}; }

private:
    std::function<void(PowerEvent)> m_on_event;
};

} // namespace kvmm

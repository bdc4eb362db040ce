// I8042: the PS/2 controller, as much of it as a guest OS needs to probe it
// quickly and to reset the machine. No keyboard or mouse input exists yet
// beyond send_ctrl_alt_del().
//
// Ports: 0x60 (data) and 0x64 (status on read, command on write); the device
// is mapped at 0x60 with I8042_PORT_RANGE_LENGTH = 5 and answers offsets 0 and
// 4 only. Command set per the IBM PC/AT technical reference (keyboard
// controller commands 0x20-0xFF) as Linux's i8042 driver uses it.
// Command 0xFE (pulse output line 0 = CPU reset) calls `reset_requested`.
//
// Interrupts: IRQ 1 is raised while the output buffer holds keyboard data and
// the command byte enables keyboard interrupts (bit 0); IRQ 12, if a line is
// given, while it holds auxiliary-port data and bit 1 enables it. Bytes echoed
// by command 0xD3 (auxiliary loopback) are auxiliary data (status bit 5), as
// Linux's i8042_check_aux() requires. No mouse is attached: commands for it
// (0xD4) are answered with 0xFE "resend". Without an IRQ 12 line Linux spends
// 250 ms in its aux IRQ test; boot with i8042.noaux to skip it.
//
// Bounds: the output queue holds at most OUTPUT_CAPACITY bytes; more are
// dropped, so a guest that never reads cannot make it grow.
//
// Threading: one mutex guards the state; callbacks run with it released.
// save() and restore() take the same mutex; they run while the VM is paused.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "base/thread_annotations.h"
#include "devices/bus/bus_device.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

namespace kvmm {

inline constexpr uint64_t I8042_PORT_RANGE_LENGTH = 5;

// The controller's saved state (docs/ARCHITECTURE.md "Saved state"): the queued output bytes
// (the head is the output buffer the guest sees), the command byte, the output port, a command
// still waiting for its data byte, and the status register's "last write was a command" bit.
// The rest of the status register and both interrupt lines' levels follow from these and are
// derived again on restore.
struct I8042State {
    static constexpr std::string_view SECTION = "i8042";
    static constexpr uint32_t VERSION = 1;

    struct OutputByte {
        uint8_t value { 0 };
        bool from_aux { false }; // auxiliary-port data: status bit 5, IRQ 12

        bool operator==(OutputByte const&) const = default;
    };

    std::vector<OutputByte> output;
    uint8_t command_byte { 0 };
    uint8_t output_port { 0x01 };
    // One of the commands that take a data byte: 0x60, 0xD1, 0xD2, 0xD3, 0xD4.
    std::optional<uint8_t> pending_command;
    bool last_write_was_command { false };

    bool operator==(I8042State const&) const = default;
    void encode(StateWriter& writer) const;
    // Refuses more output bytes than I8042::OUTPUT_CAPACITY before reading them.
    static Expected<I8042State> decode(StateReader& reader);
};

class I8042 final : public BusDevice {
public:
    static constexpr size_t OUTPUT_CAPACITY = 16;

    I8042(std::shared_ptr<InterruptLine> keyboard_irq, std::function<void()> reset_requested,
          std::shared_ptr<InterruptLine> aux_irq = nullptr);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    // Queues the set-1 scancodes of Ctrl+Alt+Del being pressed and released.
    void send_ctrl_alt_del();

    I8042State save() const;
    // Replaces the controller's state, then drives both interrupt lines to the levels it
    // implies (even when they seem unchanged: the interrupt controller may have been restored
    // with any level). Never requests a reset, whatever the output port holds. Refused, naming
    // the field and changing nothing, when the output queue is longer than OUTPUT_CAPACITY or
    // the pending command is not one that takes a data byte.
    Expected<void> restore(I8042State const& state);

private:
    struct OutputByte {
        uint8_t value;
        bool from_aux;
    };

    void queue_output(uint8_t byte, bool from_aux = false) REQUIRES(m_lock);
    // Returns true when the reset line was pulsed.
    bool handle_command(uint8_t command) REQUIRES(m_lock);
    bool handle_data(uint8_t value) REQUIRES(m_lock);
    void lower_interrupts() REQUIRES(m_lock);
    void update_interrupt() REQUIRES(m_lock);
    // The levels the output buffer and the command byte imply for IRQ 1 and IRQ 12.
    bool keyboard_interrupt_level() const REQUIRES(m_lock);
    bool aux_interrupt_level() const REQUIRES(m_lock);

    std::shared_ptr<InterruptLine> m_keyboard_irq;
    std::function<void()> m_reset_requested;
    std::shared_ptr<InterruptLine> m_aux_irq;

    mutable Mutex m_lock;
    std::deque<OutputByte> m_output GUARDED_BY(m_lock);
    uint8_t m_command_byte GUARDED_BY(m_lock);
    uint8_t m_output_port GUARDED_BY(m_lock) { 0x01 };           // bit 0: CPU reset line, inactive high
    std::optional<uint8_t> m_pending_command GUARDED_BY(m_lock); // a command waiting for its data byte
    bool m_last_write_was_command GUARDED_BY(m_lock) { false };
    bool m_keyboard_irq_level GUARDED_BY(m_lock) { false };
    bool m_aux_irq_level GUARDED_BY(m_lock) { false };
};

} // namespace kvmm

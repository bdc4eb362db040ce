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
#pragma once

#include "devices/bus/bus_device.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

namespace kvmm {

inline constexpr uint64_t I8042_PORT_RANGE_LENGTH = 5;

class I8042 final : public BusDevice {
public:
    static constexpr size_t OUTPUT_CAPACITY = 16;

    I8042(std::shared_ptr<InterruptLine> keyboard_irq, std::function<void()> reset_requested,
          std::shared_ptr<InterruptLine> aux_irq = nullptr);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    // Queues the set-1 scancodes of Ctrl+Alt+Del being pressed and released.
    void send_ctrl_alt_del();

private:
    struct OutputByte {
        uint8_t value;
        bool from_aux;
    };

    void queue_output(uint8_t byte, bool from_aux = false);
    // Returns true when the reset line was pulsed.
    bool handle_command(uint8_t command);
    bool handle_data(uint8_t value);
    void lower_interrupts();
    void update_interrupt();

    std::shared_ptr<InterruptLine> m_keyboard_irq;
    std::function<void()> m_reset_requested;
    std::shared_ptr<InterruptLine> m_aux_irq;

    std::mutex m_lock;
    std::deque<OutputByte> m_output;
    uint8_t m_command_byte;
    uint8_t m_output_port { 0x01 };           // bit 0: CPU reset line, inactive high
    std::optional<uint8_t> m_pending_command; // a command waiting for its data byte
    bool m_last_write_was_command { false };
    bool m_keyboard_irq_level { false };
    bool m_aux_irq_level { false };
};

} // namespace kvmm

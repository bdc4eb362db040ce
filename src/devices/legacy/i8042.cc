#include "devices/legacy/i8042.h"

#include <array>

namespace kvmm {

namespace {

constexpr uint64_t DATA_PORT_OFFSET = 0;
constexpr uint64_t STATUS_PORT_OFFSET = 4;

constexpr uint8_t STATUS_OUTPUT_FULL = 0x01;
constexpr uint8_t STATUS_SYSTEM_FLAG = 0x04; // self-test passed
constexpr uint8_t STATUS_LAST_WAS_COMMAND = 0x08;
constexpr uint8_t STATUS_UNLOCKED = 0x10; // keyboard inhibit switch off
constexpr uint8_t STATUS_AUX_DATA = 0x20; // the output byte came from the auxiliary port

constexpr uint8_t COMMAND_BYTE_KEYBOARD_INTERRUPT = 0x01;
constexpr uint8_t COMMAND_BYTE_AUX_INTERRUPT = 0x02;
constexpr uint8_t COMMAND_BYTE_SYSTEM_FLAG = 0x04;
constexpr uint8_t COMMAND_BYTE_AUX_DISABLED = 0x20;
constexpr uint8_t COMMAND_BYTE_KEYBOARD_DISABLED = 0x10;
constexpr uint8_t COMMAND_BYTE_TRANSLATE = 0x40;

constexpr uint8_t KEYBOARD_ACK = 0xfa;

// The controller commands that wait for a data byte on port 0x60 (see handle_command()).
bool takes_data_byte(uint8_t command) {
    switch (command) {
    case 0x60: // write command byte
    case 0xd1: // write output port
    case 0xd2: // write keyboard output buffer
    case 0xd3: // write auxiliary output buffer
    case 0xd4: // write to auxiliary device
        return true;
    default:
        return false;
    }
}

} // namespace

I8042::I8042(std::shared_ptr<InterruptLine> keyboard_irq, std::function<void()> reset_requested,
             std::shared_ptr<InterruptLine> aux_irq)
    : m_keyboard_irq(std::move(keyboard_irq)), m_reset_requested(std::move(reset_requested)),
      m_aux_irq(std::move(aux_irq)), m_command_byte(COMMAND_BYTE_KEYBOARD_INTERRUPT | COMMAND_BYTE_SYSTEM_FLAG |
                                                    COMMAND_BYTE_TRANSLATE | COMMAND_BYTE_AUX_DISABLED) {}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
    MutexLock guard(m_lock);
    for (auto& byte : data)
        byte = 0;
    if (data.empty())
        return;
    if (offset == DATA_PORT_OFFSET) {
        if (!m_output.empty()) {
            data[0] = m_output.front().value;
            m_output.pop_front();
            // Reading empties the output buffer before the controller loads the next
            // byte: drop the line so the edge-triggered IRQ fires again for that byte
            // (Linux's handler reads one byte per interrupt).
            lower_interrupts();
        }
    } else if (offset == STATUS_PORT_OFFSET) {
        uint8_t status = STATUS_SYSTEM_FLAG | STATUS_UNLOCKED;
        if (!m_output.empty()) {
            status |= STATUS_OUTPUT_FULL;
            if (m_output.front().from_aux)
                status |= STATUS_AUX_DATA;
        }
        if (m_last_write_was_command)
            status |= STATUS_LAST_WAS_COMMAND;
        data[0] = status;
    } else {
        data[0] = 0xff;
    }
    update_interrupt();
}

void I8042::write(uint64_t offset, std::span<uint8_t const> data) {
    if (data.empty())
        return;
    bool reset = false;
    {
        MutexLock guard(m_lock);
        if (offset == STATUS_PORT_OFFSET) {
            m_last_write_was_command = true;
            reset = handle_command(data[0]);
        } else if (offset == DATA_PORT_OFFSET) {
            m_last_write_was_command = false;
            reset = handle_data(data[0]);
        }
        update_interrupt();
    }
    if (reset && m_reset_requested)
        m_reset_requested();
}

void I8042::send_ctrl_alt_del() {
    MutexLock guard(m_lock);
    // Set 1 make codes: Ctrl 1D, Alt 38, Del E0 53; break codes add 0x80.
    for (uint8_t byte : std::array<uint8_t, 8> { 0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d })
        queue_output(byte);
    update_interrupt();
}

void I8042::queue_output(uint8_t byte, bool from_aux) {
    if (m_output.size() < OUTPUT_CAPACITY)
        m_output.push_back(OutputByte { byte, from_aux });
}

bool I8042::handle_command(uint8_t command) {
    m_pending_command.reset();
    if (takes_data_byte(command)) {
        m_pending_command = command;
        return false;
    }
    switch (command) {
    case 0x20: // read command byte
        queue_output(m_command_byte);
        return false;
    case 0xa7: // disable auxiliary interface
        m_command_byte |= COMMAND_BYTE_AUX_DISABLED;
        return false;
    case 0xa8: // enable auxiliary interface
        m_command_byte &= static_cast<uint8_t>(~COMMAND_BYTE_AUX_DISABLED);
        return false;
    case 0xa9: // auxiliary interface test: 0 = no error
    case 0xab: // keyboard interface test: 0 = no error
        queue_output(0x00);
        return false;
    case 0xaa: // controller self test
        queue_output(0x55);
        return false;
    case 0xad: // disable keyboard
        m_command_byte |= COMMAND_BYTE_KEYBOARD_DISABLED;
        return false;
    case 0xae: // enable keyboard
        m_command_byte &= static_cast<uint8_t>(~COMMAND_BYTE_KEYBOARD_DISABLED);
        return false;
    case 0xd0: // read output port
        queue_output(m_output_port);
        return false;
    default:
        // 0xF0-0xFF pulse output port lines for each clear bit of the low nibble; bit 0 is
        // the CPU reset line, so 0xFE (and every even value) resets the machine.
        return command >= 0xf0 && (command & 0x01) == 0;
    }
}

bool I8042::handle_data(uint8_t value) {
    auto const pending = m_pending_command;
    m_pending_command.reset();
    if (!pending) {
        // A command for the keyboard itself. No real keyboard sits behind us, but acknowledging
        // every command keeps drivers from waiting for timeouts. Reset (0xFF) also reports a
        // passed self test (0xAA); identify (0xF2) reports an MF2 keyboard (0xAB 0x83).
        if (value == 0xee) { // echo answers itself, not an acknowledge
            queue_output(0xee);
            return false;
        }
        queue_output(KEYBOARD_ACK);
        if (value == 0xff)
            queue_output(0xaa);
        else if (value == 0xf2) {
            queue_output(0xab);
            queue_output(0x83);
        }
        return false;
    }
    switch (*pending) {
    case 0x60:
        m_command_byte = value;
        return false;
    case 0xd1:
        m_output_port = value;
        return (value & 0x01) == 0; // driving the reset line low resets the CPU
    case 0xd2:
        queue_output(value);
        return false;
    case 0xd3:
        queue_output(value, true);
        return false;
    case 0xd4:
        // No mouse: the auxiliary device answers "resend" to everything, which drivers take
        // as "absent" immediately.
        queue_output(0xfe, true);
        return false;
    default:
        return false;
    }
}

void I8042::lower_interrupts() {
    if (m_keyboard_irq_level) {
        m_keyboard_irq_level = false;
        m_keyboard_irq->set_level(false);
    }
    if (m_aux_irq_level) {
        m_aux_irq_level = false;
        if (m_aux_irq)
            m_aux_irq->set_level(false);
    }
}

bool I8042::keyboard_interrupt_level() const {
    // Only the byte at the head of the queue is in the output buffer the guest sees.
    return !m_output.empty() && !m_output.front().from_aux && (m_command_byte & COMMAND_BYTE_KEYBOARD_INTERRUPT);
}

bool I8042::aux_interrupt_level() const {
    return !m_output.empty() && m_output.front().from_aux && (m_command_byte & COMMAND_BYTE_AUX_INTERRUPT);
}

void I8042::update_interrupt() {
    bool const keyboard_level = keyboard_interrupt_level();
    bool const aux_level = aux_interrupt_level();
    if (keyboard_level != m_keyboard_irq_level) {
        m_keyboard_irq_level = keyboard_level;
        m_keyboard_irq->set_level(keyboard_level);
    }
    if (aux_level != m_aux_irq_level) {
        m_aux_irq_level = aux_level;
        if (m_aux_irq)
            m_aux_irq->set_level(aux_level);
    }
}

void I8042State::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u64(output.size());
    for (auto const& byte : output) {
        writer.u8(byte.value);
        writer.boolean(byte.from_aux);
    }
    writer.u8(command_byte);
    writer.u8(output_port);
    writer.boolean(pending_command.has_value());
    writer.u8(pending_command.value_or(0));
    writer.boolean(last_write_was_command);
    writer.end_section();
}

Expected<I8042State> I8042State::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    I8042State state;
    auto const count = TRY(reader.u64_in_range("output", 0, I8042::OUTPUT_CAPACITY));
    state.output.reserve(static_cast<size_t>(count));
    for (uint64_t i = 0; i < count; ++i) {
        OutputByte byte;
        byte.value = TRY(reader.u8("output.value"));
        byte.from_aux = TRY(reader.boolean("output.from_aux"));
        state.output.push_back(byte);
    }
    state.command_byte = TRY(reader.u8("command_byte"));
    state.output_port = TRY(reader.u8("output_port"));
    bool const has_pending = TRY(reader.boolean("pending_command"));
    uint8_t const pending = TRY(reader.u8("pending_command"));
    if (has_pending)
        state.pending_command = pending;
    else if (pending != 0)
        return Error::format("saved state i8042/pending_command: {:#04x} given without a pending command", pending);
    state.last_write_was_command = TRY(reader.boolean("last_write_was_command"));
    TRY(reader.end_section());
    return state;
}

I8042State I8042::save() const {
    MutexLock guard(m_lock);
    I8042State state;
    state.output.reserve(m_output.size());
    for (auto const& byte : m_output)
        state.output.push_back(I8042State::OutputByte { byte.value, byte.from_aux });
    state.command_byte = m_command_byte;
    state.output_port = m_output_port;
    state.pending_command = m_pending_command;
    state.last_write_was_command = m_last_write_was_command;
    return state;
}

Expected<void> I8042::restore(I8042State const& state) {
    if (state.output.size() > OUTPUT_CAPACITY)
        return Error::format("i8042 state: output holds {} bytes, more than the {} it can hold", state.output.size(),
                             OUTPUT_CAPACITY);
    if (state.pending_command && !takes_data_byte(*state.pending_command))
        return Error::format("i8042 state: pending_command {:#04x} is not a command that takes a data byte",
                             *state.pending_command);

    MutexLock guard(m_lock);
    m_output.clear();
    for (auto const& byte : state.output)
        m_output.push_back(OutputByte { byte.value, byte.from_aux });
    m_command_byte = state.command_byte;
    m_output_port = state.output_port;
    m_pending_command = state.pending_command;
    m_last_write_was_command = state.last_write_was_command;
    m_keyboard_irq_level = keyboard_interrupt_level();
    m_keyboard_irq->set_level(m_keyboard_irq_level);
    m_aux_irq_level = aux_interrupt_level();
    if (m_aux_irq)
        m_aux_irq->set_level(m_aux_irq_level);
    return {};
}

} // namespace kvmm

#include "devices/legacy/serial_16550.h"

#include <algorithm>

namespace kvmm {

namespace {

// Register offsets (PC16550D table 2).
constexpr uint64_t DATA = 0;             // RBR (read), THR (write), DLL when DLAB
constexpr uint64_t INTERRUPT_ENABLE = 1; // IER, DLM when DLAB
constexpr uint64_t INTERRUPT_ID = 2;     // IIR (read), FCR (write)
constexpr uint64_t LINE_CONTROL = 3;
constexpr uint64_t MODEM_CONTROL = 4;
constexpr uint64_t LINE_STATUS = 5;
constexpr uint64_t MODEM_STATUS = 6;
constexpr uint64_t SCRATCH = 7;

constexpr uint8_t IER_RECEIVE_DATA = 0x01;
constexpr uint8_t IER_TRANSMIT_EMPTY = 0x02;
constexpr uint8_t IER_LINE_STATUS = 0x04;
constexpr uint8_t IER_MODEM_STATUS = 0x08;

constexpr uint8_t IIR_NONE = 0x01;
constexpr uint8_t IIR_LINE_STATUS = 0x06;
constexpr uint8_t IIR_RECEIVE_DATA = 0x04;
constexpr uint8_t IIR_TRANSMIT_EMPTY = 0x02;
constexpr uint8_t IIR_MODEM_STATUS = 0x00;
constexpr uint8_t IIR_FIFO_ENABLED = 0xc0;

constexpr uint8_t FCR_ENABLE = 0x01;
constexpr uint8_t FCR_CLEAR_RECEIVE = 0x02;

constexpr uint8_t LCR_DLAB = 0x80;

constexpr uint8_t MCR_DTR = 0x01;
constexpr uint8_t MCR_RTS = 0x02;
constexpr uint8_t MCR_OUT1 = 0x04;
constexpr uint8_t MCR_OUT2 = 0x08;
constexpr uint8_t MCR_LOOPBACK = 0x10;

constexpr uint8_t LSR_DATA_READY = 0x01;
constexpr uint8_t LSR_OVERRUN = 0x02;
constexpr uint8_t LSR_TRANSMIT_HOLDING_EMPTY = 0x20;
constexpr uint8_t LSR_TRANSMITTER_EMPTY = 0x40;

constexpr uint8_t MSR_CTS = 0x10;
constexpr uint8_t MSR_DSR = 0x20;
constexpr uint8_t MSR_RI = 0x40;
constexpr uint8_t MSR_DCD = 0x80;

// The bits each register can hold: the UART masks what the guest writes (IER, MCR) or sets
// only these itself (the MSR delta bits).
constexpr uint8_t IER_WRITABLE = 0x0f;
constexpr uint8_t MCR_WRITABLE = 0x1f;
constexpr uint8_t MSR_DELTA_BITS = 0x0f;

} // namespace

Serial16550::Serial16550(std::shared_ptr<InterruptLine> irq, std::unique_ptr<ByteSink> output)
    : m_irq(std::move(irq)), m_output(std::move(output)) {}

void Serial16550::read(uint64_t offset, std::span<uint8_t> data) {
    MutexLock guard(m_lock);
    // The UART's registers are 8 bits wide; a wider access reads the first and zero-fills.
    for (auto& byte : data)
        byte = 0;
    if (!data.empty())
        data[0] = read_register(offset);
    update_interrupt();
}

void Serial16550::write(uint64_t offset, std::span<uint8_t const> data) {
    if (data.empty())
        return;
    std::optional<uint8_t> transmitted;
    {
        MutexLock guard(m_lock);
        transmitted = write_register(offset, data[0]);
        update_interrupt();
    }
    if (transmitted)
        m_output->write(std::span(&*transmitted, 1));
}

size_t Serial16550::receive(std::span<uint8_t const> bytes) {
    MutexLock guard(m_lock);
    // In loopback mode the receiver is disconnected from the outside world (PC16550D 8.6).
    if (m_modem_control & MCR_LOOPBACK)
        return 0;
    size_t const room = RECEIVE_CAPACITY - m_receive_buffer.size();
    size_t const taken = std::min(room, bytes.size());
    m_receive_buffer.insert(m_receive_buffer.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(taken));
    update_interrupt();
    return taken;
}

uint8_t Serial16550::read_register(uint64_t offset) {
    bool const dlab = m_line_control & LCR_DLAB;
    switch (offset) {
    case DATA:
        if (dlab)
            return m_divisor_low;
        if (m_receive_buffer.empty())
            return 0;
        {
            uint8_t const byte = m_receive_buffer.front();
            m_receive_buffer.pop_front();
            return byte;
        }
    case INTERRUPT_ENABLE:
        return dlab ? m_divisor_high : m_interrupt_enable;
    case INTERRUPT_ID: {
        uint8_t const identification = interrupt_identification();
        // Reading IIR while it reports THRE acknowledges that interrupt (PC16550D table 4).
        if ((identification & 0x0f) == IIR_TRANSMIT_EMPTY)
            m_transmit_interrupt_pending = false;
        return identification;
    }
    case LINE_CONTROL:
        return m_line_control;
    case MODEM_CONTROL:
        return m_modem_control;
    case LINE_STATUS: {
        uint8_t status = LSR_TRANSMIT_HOLDING_EMPTY | LSR_TRANSMITTER_EMPTY;
        if (!m_receive_buffer.empty())
            status |= LSR_DATA_READY;
        if (m_overrun)
            status |= LSR_OVERRUN;
        m_overrun = false; // error bits clear when LSR is read
        return status;
    }
    case MODEM_STATUS: {
        uint8_t const status = modem_status() | m_modem_status_delta;
        m_modem_status_delta = 0;
        return status;
    }
    case SCRATCH:
        return m_scratch;
    default:
        return 0xff;
    }
}

std::optional<uint8_t> Serial16550::write_register(uint64_t offset, uint8_t value) {
    bool const dlab = m_line_control & LCR_DLAB;
    switch (offset) {
    case DATA:
        if (dlab) {
            m_divisor_low = value;
            return std::nullopt;
        }
        // The byte leaves at once: the holding register is empty again.
        m_transmit_interrupt_pending = true;
        if (!(m_modem_control & MCR_LOOPBACK))
            return value;
        // Loopback wires the transmitter's output to the receiver (PC16550D 8.6, MCR bit 4).
        if (m_receive_buffer.size() < RECEIVE_CAPACITY)
            m_receive_buffer.push_back(value);
        else
            m_overrun = true;
        return std::nullopt;
    case INTERRUPT_ENABLE:
        if (dlab) {
            m_divisor_high = value;
            return std::nullopt;
        }
        // Writing IER with ETBEI set while the transmitter is empty (it always is) raises
        // the THRE interrupt again, as 8250-family parts do: Linux's console write saves IER,
        // clears it, writes, then restores it and expects the pending transmit to resume.
        if (value & IER_TRANSMIT_EMPTY)
            m_transmit_interrupt_pending = true;
        m_interrupt_enable = value & 0x0f;
        return std::nullopt;
    case INTERRUPT_ID: // FCR
        m_fifo_enabled = value & FCR_ENABLE;
        if (value & FCR_CLEAR_RECEIVE)
            m_receive_buffer.clear();
        return std::nullopt;
    case LINE_CONTROL:
        m_line_control = value;
        return std::nullopt;
    case MODEM_CONTROL: {
        uint8_t const old_status = modem_status();
        m_modem_control = value & 0x1f;
        uint8_t const new_status = modem_status();
        // Delta bits: CTS (0), DSR (1), trailing edge of RI (2), DCD (3).
        if ((old_status ^ new_status) & MSR_CTS)
            m_modem_status_delta |= 0x01;
        if ((old_status ^ new_status) & MSR_DSR)
            m_modem_status_delta |= 0x02;
        if ((old_status & MSR_RI) && !(new_status & MSR_RI))
            m_modem_status_delta |= 0x04;
        if ((old_status ^ new_status) & MSR_DCD)
            m_modem_status_delta |= 0x08;
        return std::nullopt;
    }
    case SCRATCH:
        m_scratch = value;
        return std::nullopt;
    default:
        return std::nullopt; // LSR and MSR are read-only
    }
}

uint8_t Serial16550::modem_status() const {
    if (m_modem_control & MCR_LOOPBACK) {
        // Loopback wires the modem control outputs to the status inputs (PC16550D 8.6).
        uint8_t status = 0;
        if (m_modem_control & MCR_RTS)
            status |= MSR_CTS;
        if (m_modem_control & MCR_DTR)
            status |= MSR_DSR;
        if (m_modem_control & MCR_OUT1)
            status |= MSR_RI;
        if (m_modem_control & MCR_OUT2)
            status |= MSR_DCD;
        return status;
    }
    // A terminal is always attached and ready.
    return MSR_DCD | MSR_DSR | MSR_CTS;
}

uint8_t Serial16550::interrupt_identification() const {
    uint8_t const fifo_bits = m_fifo_enabled ? IIR_FIFO_ENABLED : 0;
    // Priority order: line status, received data, transmitter empty, modem status.
    if ((m_interrupt_enable & IER_LINE_STATUS) && m_overrun)
        return fifo_bits | IIR_LINE_STATUS;
    if ((m_interrupt_enable & IER_RECEIVE_DATA) && !m_receive_buffer.empty())
        return fifo_bits | IIR_RECEIVE_DATA;
    if ((m_interrupt_enable & IER_TRANSMIT_EMPTY) && m_transmit_interrupt_pending)
        return fifo_bits | IIR_TRANSMIT_EMPTY;
    if ((m_interrupt_enable & IER_MODEM_STATUS) && m_modem_status_delta)
        return fifo_bits | IIR_MODEM_STATUS;
    return fifo_bits | IIR_NONE;
}

bool Serial16550::interrupt_level() const {
    bool const pending = (interrupt_identification() & IIR_NONE) == 0;
    // In loopback mode OUT2 is looped back too and the IRQ output is disconnected.
    return pending && (m_modem_control & MCR_OUT2) && !(m_modem_control & MCR_LOOPBACK);
}

void Serial16550::update_interrupt() {
    bool const level = interrupt_level();
    if (level != m_irq_level) {
        m_irq_level = level;
        m_irq->set_level(level);
    }
}

void Serial16550State::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.bytes(std::span<uint8_t const>(receive_buffer));
    writer.u8(interrupt_enable);
    writer.u8(line_control);
    writer.u8(modem_control);
    writer.u8(scratch);
    writer.u8(divisor_low);
    writer.u8(divisor_high);
    writer.u8(modem_status_delta);
    writer.boolean(fifo_enabled);
    writer.boolean(transmit_interrupt_pending);
    writer.boolean(overrun);
    writer.end_section();
}

Expected<Serial16550State> Serial16550State::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    Serial16550State state;
    auto const buffer = TRY(reader.bytes("receive_buffer", Serial16550::RECEIVE_CAPACITY));
    state.receive_buffer.resize(buffer.size());
    std::transform(buffer.begin(), buffer.end(), state.receive_buffer.begin(),
                   [](std::byte byte) { return static_cast<uint8_t>(byte); });
    state.interrupt_enable = TRY(reader.u8("interrupt_enable"));
    state.line_control = TRY(reader.u8("line_control"));
    state.modem_control = TRY(reader.u8("modem_control"));
    state.scratch = TRY(reader.u8("scratch"));
    state.divisor_low = TRY(reader.u8("divisor_low"));
    state.divisor_high = TRY(reader.u8("divisor_high"));
    state.modem_status_delta = TRY(reader.u8("modem_status_delta"));
    state.fifo_enabled = TRY(reader.boolean("fifo_enabled"));
    state.transmit_interrupt_pending = TRY(reader.boolean("transmit_interrupt_pending"));
    state.overrun = TRY(reader.boolean("overrun"));
    TRY(reader.end_section());
    return state;
}

Serial16550State Serial16550::save() const {
    MutexLock guard(m_lock);
    return Serial16550State {
        .receive_buffer = std::vector<uint8_t>(m_receive_buffer.begin(), m_receive_buffer.end()),
        .interrupt_enable = m_interrupt_enable,
        .line_control = m_line_control,
        .modem_control = m_modem_control,
        .scratch = m_scratch,
        .divisor_low = m_divisor_low,
        .divisor_high = m_divisor_high,
        .modem_status_delta = m_modem_status_delta,
        .fifo_enabled = m_fifo_enabled,
        .transmit_interrupt_pending = m_transmit_interrupt_pending,
        .overrun = m_overrun,
    };
}

Expected<void> Serial16550::restore(Serial16550State const& state) {
    if (state.receive_buffer.size() > RECEIVE_CAPACITY)
        return Error::format("serial-16550 state: receive_buffer holds {} bytes, more than the {} it can hold",
                             state.receive_buffer.size(), RECEIVE_CAPACITY);
    auto const check_bits = [](std::string_view field, uint8_t value, uint8_t allowed) -> Expected<void> {
        if (value & ~allowed)
            return Error::format("serial-16550 state: {} {:#04x} has bits outside {:#04x}", field, value, allowed);
        return {};
    };
    TRY(check_bits("interrupt_enable", state.interrupt_enable, IER_WRITABLE));
    TRY(check_bits("modem_control", state.modem_control, MCR_WRITABLE));
    TRY(check_bits("modem_status_delta", state.modem_status_delta, MSR_DELTA_BITS));

    MutexLock guard(m_lock);
    m_receive_buffer.assign(state.receive_buffer.begin(), state.receive_buffer.end());
    m_interrupt_enable = state.interrupt_enable;
    m_line_control = state.line_control;
    m_modem_control = state.modem_control;
    m_scratch = state.scratch;
    m_divisor_low = state.divisor_low;
    m_divisor_high = state.divisor_high;
    m_modem_status_delta = state.modem_status_delta;
    m_fifo_enabled = state.fifo_enabled;
    m_transmit_interrupt_pending = state.transmit_interrupt_pending;
    m_overrun = state.overrun;
    m_irq_level = interrupt_level();
    m_irq->set_level(m_irq_level);
    return {};
}

} // namespace kvmm

#include "devices/legacy/serial_16550.h"

#include "base/testing/state_round_trip.h"
#include "devices/legacy/recording_interrupt_line.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace kvmm {
namespace {

class RecordingSink final : public ByteSink {
public:
    explicit RecordingSink(std::string& output) : m_output(output) {}
    void write(std::span<uint8_t const> bytes) override { m_output.append(bytes.begin(), bytes.end()); }

private:
    std::string& m_output;
};

class SerialTest : public ::testing::Test {
protected:
    uint8_t in(uint64_t offset) {
        uint8_t value = 0;
        m_serial.read(offset, std::span(&value, 1));
        return value;
    }
    void out(uint64_t offset, uint8_t value) { m_serial.write(offset, std::span(&value, 1)); }

    std::string m_output;
    std::shared_ptr<RecordingInterruptLine> m_irq = std::make_shared<RecordingInterruptLine>();
    Serial16550 m_serial { m_irq, std::make_unique<RecordingSink>(m_output) };
};

TEST_F(SerialTest, TransmittedBytesReachSinkAndTransmitterStaysEmpty) {
    for (char character : std::string("hi\n"))
        out(0, static_cast<uint8_t>(character));
    EXPECT_EQ(m_output, "hi\n");
    EXPECT_EQ(in(5) & 0x60, 0x60); // THRE and TEMT
}

TEST_F(SerialTest, DivisorLatchHidesDataAndInterruptEnableRegisters) {
    out(3, 0x80); // DLAB
    out(0, 0x01);
    out(1, 0x02);
    EXPECT_EQ(in(0), 0x01);
    EXPECT_EQ(in(1), 0x02);
    EXPECT_TRUE(m_output.empty());
    out(3, 0x03);
    EXPECT_EQ(in(1), 0x00);
}

TEST_F(SerialTest, ReceivedBytesSetDataReadyAndRaiseInterruptWhenEnabled) {
    out(4, 0x08); // OUT2 gates the IRQ
    out(1, 0x01); // received-data interrupt
    uint8_t const input[] = { 'x', 'y' };
    EXPECT_EQ(m_serial.receive(input), 2u);
    EXPECT_TRUE(m_irq->level());
    EXPECT_EQ(in(5) & 0x01, 0x01);
    EXPECT_EQ(in(2) & 0x0f, 0x04);
    EXPECT_EQ(in(0), 'x');
    EXPECT_EQ(in(0), 'y');
    EXPECT_EQ(in(5) & 0x01, 0x00);
    EXPECT_FALSE(m_irq->level());
}

TEST_F(SerialTest, InterruptNeedsOut2) {
    out(1, 0x01);
    uint8_t const input[] = { 'x' };
    m_serial.receive(input);
    EXPECT_FALSE(m_irq->level());
    out(4, 0x08);
    EXPECT_TRUE(m_irq->level());
}

TEST_F(SerialTest, TransmitEmptyInterruptIsAcknowledgedByReadingIir) {
    out(4, 0x08);
    out(1, 0x02); // enabling THRE with an empty transmitter raises it at once
    EXPECT_TRUE(m_irq->level());
    EXPECT_EQ(in(2) & 0x0f, 0x02);
    EXPECT_FALSE(m_irq->level());
    EXPECT_EQ(in(2) & 0x0f, 0x01); // nothing pending any more
    out(0, 'a');                   // transmitting re-arms it
    EXPECT_TRUE(m_irq->level());
}

TEST_F(SerialTest, RewritingIerWithThreRearmsTransmitEmptyInterrupt) {
    out(4, 0x08);
    out(1, 0x02);
    EXPECT_EQ(in(2) & 0x0f, 0x02);
    EXPECT_FALSE(m_irq->level());
    out(1, 0x00); // what Linux's console write does around its output
    EXPECT_EQ(in(2) & 0x0f, 0x01);
    out(1, 0x02);
    EXPECT_TRUE(m_irq->level());
    EXPECT_EQ(in(2) & 0x0f, 0x02);
    out(1, 0x03); // ETBEI was already set: a rewrite re-arms too
    EXPECT_TRUE(m_irq->level());
    EXPECT_EQ(in(2) & 0x0f, 0x02);
}

TEST_F(SerialTest, TransmitEmptyInterruptStaysPendingWhileDisabled) {
    out(0, 'a'); // THR written with IER.ETBEI clear
    EXPECT_EQ(in(2) & 0x0f, 0x01);
    out(4, 0x08);
    out(1, 0x02);
    EXPECT_TRUE(m_irq->level());
}

TEST_F(SerialTest, ReceivedDataHasPriorityOverTransmitEmpty) {
    out(1, 0x03);
    uint8_t const input[] = { 'z' };
    m_serial.receive(input);
    EXPECT_EQ(in(2) & 0x0f, 0x04);
    in(0);
    EXPECT_EQ(in(2) & 0x0f, 0x02);
}

TEST_F(SerialTest, LineStatusOverrunHasHighestPriorityAndClearsOnLsrRead) {
    out(4, 0x10); // loopback: the guest can fill its own receive buffer
    for (size_t i = 0; i <= Serial16550::RECEIVE_CAPACITY; ++i)
        out(0, 'o');
    out(1, 0x0f); // every interrupt source
    EXPECT_EQ(in(2) & 0x0f, 0x06);
    EXPECT_EQ(in(5) & 0x03, 0x03); // overrun and data ready
    EXPECT_EQ(in(5) & 0x02, 0x00); // overrun is reported once
    EXPECT_EQ(in(2) & 0x0f, 0x04);
}

TEST_F(SerialTest, ModemStatusChangeIsLowestPriorityAndClearsOnMsrRead) {
    out(4, 0x10);        // loopback: the modem inputs follow MCR
    in(6);               // consume the deltas of entering loopback
    out(1, 0x0a);        // THRE and modem status interrupts
    out(4, 0x10 | 0x02); // RTS loops to CTS
    EXPECT_EQ(in(2) & 0x0f, 0x02);
    EXPECT_EQ(in(2) & 0x0f, 0x00);
    EXPECT_EQ(in(6), 0x10 | 0x01); // CTS and delta-CTS
    EXPECT_EQ(in(6), 0x10);
    EXPECT_EQ(in(2) & 0x0f, 0x01);
}

TEST_F(SerialTest, LoopbackDisconnectsInterruptOutput) {
    out(1, 0x01);
    out(4, 0x10 | 0x08); // loopback, OUT2
    out(0, 'l');
    EXPECT_EQ(in(2) & 0x0f, 0x04); // pending inside the UART...
    EXPECT_FALSE(m_irq->level());  // ...but not on the wire
    out(4, 0x08);
    EXPECT_TRUE(m_irq->level());
}

TEST_F(SerialTest, InterruptLineIsDrivenOnlyOnChanges) {
    out(4, 0x08);
    out(1, 0x01);
    uint8_t const input[] = { 'a', 'b', 'c' };
    m_serial.receive(input);
    in(0);
    in(0);
    in(0);
    EXPECT_EQ(m_irq->levels, (std::vector<bool> { true, false }));
}

TEST_F(SerialTest, FifoEnableShowsInIirAndClearReceiveEmptiesBuffer) {
    uint8_t const input[] = { 'a', 'b' };
    m_serial.receive(input);
    out(2, 0x07);
    EXPECT_EQ(in(2) & 0xc0, 0xc0);
    EXPECT_EQ(in(5) & 0x01, 0x00);
}

TEST_F(SerialTest, LoopbackReturnsTransmittedBytesAndLoopsModemLines) {
    out(4, 0x10 | 0x02 | 0x01); // loopback, RTS, DTR
    out(0, 'q');
    EXPECT_TRUE(m_output.empty());
    EXPECT_EQ(in(0), 'q');
    EXPECT_EQ(in(6) & 0xf0, 0x30); // CTS, DSR
    uint8_t const input[] = { 'n' };
    EXPECT_EQ(m_serial.receive(input), 0u); // receiver disconnected from outside
    out(4, 0x10 | 0x08 | 0x04);             // loopback, OUT2, OUT1
    EXPECT_EQ(in(6) & 0xf0, 0xc0);          // DCD, RI
    out(4, 0x00);
    EXPECT_EQ(in(6) & 0xf0, 0xb0); // DCD, DSR, CTS
}

TEST_F(SerialTest, ReceiveBufferIsBounded) {
    std::vector<uint8_t> big(Serial16550::RECEIVE_CAPACITY + 100, 'a');
    EXPECT_EQ(m_serial.receive(big), Serial16550::RECEIVE_CAPACITY);
    EXPECT_EQ(m_serial.receive(big), 0u);
    in(0);
    EXPECT_EQ(m_serial.receive(big), 1u);
}

TEST_F(SerialTest, ScratchRegisterStoresAByte) {
    out(7, 0x5a);
    EXPECT_EQ(in(7), 0x5a);
}

TEST_F(SerialTest, RandomAccessesOfAnyWidthNeverCrash) {
    std::mt19937 random(1234);
    for (int i = 0; i < 20000; ++i) {
        uint8_t buffer[8] {};
        size_t const width = 1u << (random() % 4);
        uint64_t const offset = random() % 10;
        if (random() % 2)
            m_serial.read(offset, std::span(buffer, width));
        else {
            buffer[0] = static_cast<uint8_t>(random());
            m_serial.write(offset, std::span<uint8_t const>(buffer, width));
        }
    }
    m_serial.write(0, std::span<uint8_t const>());
    m_serial.read(0, std::span<uint8_t>());
    // Whatever happened, the device still works as a UART afterwards.
    out(3, 0x03);
    out(4, 0x00);
    out(0, '!');
    EXPECT_EQ(m_output.back(), '!');
    EXPECT_EQ(in(5) & 0x60, 0x60);
}

TEST_F(SerialTest, ConcurrentReceiveAndReadLoseNoBytes) {
    constexpr size_t TOTAL = 20000;
    std::thread producer([&] {
        size_t sent = 0;
        while (sent < TOTAL) {
            uint8_t const byte = static_cast<uint8_t>(sent);
            sent += m_serial.receive(std::span(&byte, 1));
        }
    });
    size_t received = 0;
    while (received < TOTAL) {
        if (in(5) & 0x01) {
            ASSERT_EQ(in(0), static_cast<uint8_t>(received));
            ++received;
        }
    }
    producer.join();
}

// A UART with its own line and sink, for the saved-state tests that need two side by side.
struct Uart {
    uint8_t in(uint64_t offset) {
        uint8_t value = 0;
        serial.read(offset, std::span(&value, 1));
        return value;
    }
    void out(uint64_t offset, uint8_t value) { serial.write(offset, std::span(&value, 1)); }
    void receive(std::string_view text) {
        serial.receive(std::span(reinterpret_cast<uint8_t const*>(text.data()), text.size()));
    }

    std::string output;
    std::shared_ptr<RecordingInterruptLine> irq = std::make_shared<RecordingInterruptLine>();
    Serial16550 serial { irq, std::make_unique<RecordingSink>(output) };
};

// What the guest sees on a sequence of register reads: each value and the line's level after it.
std::vector<std::pair<uint8_t, bool>> read_all(Uart& uart, std::vector<uint64_t> const& offsets) {
    std::vector<std::pair<uint8_t, bool>> seen;
    for (uint64_t offset : offsets) {
        uint8_t const value = uart.in(offset);
        seen.emplace_back(value, uart.irq->level());
    }
    return seen;
}

Serial16550State restore_copy(Uart const& original, Uart& fresh) {
    auto const saved = original.serial.save();
    auto const decoded = testing::round_trip(saved);
    EXPECT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(*decoded, saved);
    auto const restored = fresh.serial.restore(*decoded);
    EXPECT_TRUE(restored) << restored.error().message();
    EXPECT_EQ(fresh.serial.save(), saved);
    return saved;
}

TEST(SerialState, RestoredUartHasTheSameRegistersFifoAndInterruptLevel) {
    Uart original;
    original.out(3, 0x80); // DLAB: 115200 baud
    original.out(0, 0x01);
    original.out(1, 0x00);
    original.out(3, 0x1b); // 8E1
    original.out(2, 0x07); // FIFO on
    original.out(4, 0x0b); // DTR, RTS, OUT2
    original.out(7, 0xa5);
    original.out(1, 0x0f); // every source; THRE becomes pending
    original.receive("hello");
    ASSERT_EQ(original.in(0), 'h');
    ASSERT_TRUE(original.irq->level());

    Uart copy;
    auto const saved = restore_copy(original, copy);
    EXPECT_EQ(saved.receive_buffer, (std::vector<uint8_t> { 'e', 'l', 'l', 'o' }));
    EXPECT_TRUE(saved.transmit_interrupt_pending);
    EXPECT_EQ(copy.irq->levels, (std::vector<bool> { true }));

    // IIR, LSR, the four bytes, IIR twice (THRE, then acknowledged), LSR, MSR, scratch, LCR, MCR.
    std::vector<uint64_t> const reads { 2, 5, 0, 0, 0, 0, 2, 2, 2, 5, 6, 7, 3, 4 };
    auto const expected = read_all(original, reads);
    EXPECT_EQ(read_all(copy, reads), expected);
    EXPECT_EQ(expected[2].first, 'e');
    EXPECT_FALSE(expected.back().second);
    // The divisor latch came along, and both transmit alike.
    original.out(3, 0x9b);
    copy.out(3, 0x9b);
    EXPECT_EQ(read_all(copy, { 0, 1 }), read_all(original, { 0, 1 }));
    EXPECT_EQ(copy.in(0), 0x01);
    original.out(3, 0x1b);
    copy.out(3, 0x1b);
    original.out(0, '!');
    copy.out(0, '!');
    EXPECT_EQ(copy.output, original.output);
    EXPECT_EQ(copy.irq->level(), original.irq->level());
}

TEST(SerialState, RestoredLoopbackKeepsOverrunModemDeltaAndAFullFifo) {
    Uart original;
    original.out(4, 0x10); // loopback: the guest fills its own receive buffer
    original.in(6);        // consume the deltas of entering loopback
    for (size_t i = 0; i <= Serial16550::RECEIVE_CAPACITY; ++i)
        original.out(0, static_cast<uint8_t>(i));
    original.out(4, 0x10 | 0x02); // RTS loops to CTS: a modem status change
    original.out(1, 0x0f);

    Uart copy;
    auto const saved = restore_copy(original, copy);
    EXPECT_EQ(saved.receive_buffer.size(), Serial16550::RECEIVE_CAPACITY);
    EXPECT_TRUE(saved.overrun);
    EXPECT_EQ(saved.modem_status_delta, 0x01);
    EXPECT_FALSE(copy.irq->level()) << "loopback disconnects the interrupt output";

    // IIR (line status), LSR (overrun, once), MSR (delta, once), IIR, the first bytes.
    std::vector<uint64_t> const reads { 2, 5, 5, 6, 6, 2, 0, 0, 0, 5 };
    EXPECT_EQ(read_all(copy, reads), read_all(original, reads));
    original.out(4, 0x08); // out of loopback with OUT2: the pending data now reaches the line
    copy.out(4, 0x08);
    EXPECT_TRUE(original.irq->level());
    EXPECT_TRUE(copy.irq->level());
    std::vector<uint64_t> drain(Serial16550::RECEIVE_CAPACITY, 0);
    EXPECT_EQ(read_all(copy, drain), read_all(original, drain));
}

TEST(SerialState, RestoreDrivesTheLineEvenWhenItsLevelSeemsUnchanged) {
    Uart uart;
    ASSERT_TRUE(uart.serial.restore(Serial16550State {}));
    // The interrupt controller may have been restored with the line high; the UART says low.
    EXPECT_EQ(uart.irq->levels, (std::vector<bool> { false }));
}

TEST(SerialState, DecodeRefusesATruncatedBlobAWrongVersionAndAnOversizedFifo) {
    StateWriter whole;
    Serial16550State {}.encode(whole);
    auto blob = seal_state(whole.payload());
    blob.pop_back();
    auto const cut = open_state(blob);
    ASSERT_FALSE(cut);
    EXPECT_NE(cut.error().message().find("payload length"), std::string::npos) << cut.error().message();

    StateWriter short_body; // the section ends after IER
    short_body.begin_section(Serial16550State::SECTION, Serial16550State::VERSION);
    short_body.bytes(std::span<uint8_t const>());
    short_body.u8(0);
    short_body.end_section();
    auto const truncated = testing::decode_payload<Serial16550State>(short_body.payload());
    ASSERT_FALSE(truncated);
    EXPECT_NE(truncated.error().message().find("serial-16550/line_control: truncated"), std::string::npos)
        << truncated.error().message();

    StateWriter newer;
    newer.begin_section(Serial16550State::SECTION, Serial16550State::VERSION + 1);
    newer.end_section();
    auto const version = testing::decode_payload<Serial16550State>(newer.payload());
    ASSERT_FALSE(version);
    EXPECT_NE(version.error().message().find("serial-16550 (section): version 2 is not one this kvmm reads"),
              std::string::npos)
        << version.error().message();

    Serial16550State oversized;
    oversized.receive_buffer.assign(Serial16550::RECEIVE_CAPACITY + 1, 'x');
    auto const too_long = testing::round_trip(oversized);
    ASSERT_FALSE(too_long);
    EXPECT_NE(too_long.error().message().find("serial-16550/receive_buffer: length 4097 is more than the 4096"),
              std::string::npos)
        << too_long.error().message();
}

TEST(SerialState, RestoreRefusesValuesTheUartNeverHoldsAndChangesNothing) {
    Uart uart;
    uart.out(4, 0x08);
    uart.out(1, 0x01);
    uart.receive("ab");
    auto const before = uart.serial.save();
    auto const levels_before = uart.irq->levels;

    auto refused = [&](Serial16550State const& state) {
        auto const result = uart.serial.restore(state);
        EXPECT_EQ(uart.serial.save(), before);
        EXPECT_EQ(uart.irq->levels, levels_before);
        return result ? std::string("accepted") : result.error().message();
    };
    Serial16550State state;
    state.receive_buffer.assign(Serial16550::RECEIVE_CAPACITY + 1, 'x');
    EXPECT_NE(refused(state).find("receive_buffer holds 4097 bytes"), std::string::npos);
    state = {};
    state.interrupt_enable = 0x10;
    EXPECT_NE(refused(state).find("interrupt_enable 0x10 has bits outside 0x0f"), std::string::npos);
    state = {};
    state.modem_control = 0x20;
    EXPECT_NE(refused(state).find("modem_control 0x20 has bits outside 0x1f"), std::string::npos);
    state = {};
    state.modem_status_delta = 0x80;
    EXPECT_NE(refused(state).find("modem_status_delta 0x80"), std::string::npos);
    EXPECT_EQ(uart.in(0), 'a');
}

} // namespace
} // namespace kvmm

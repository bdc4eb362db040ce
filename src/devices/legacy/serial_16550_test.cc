#include "devices/legacy/serial_16550.h"

#include "devices/legacy/recording_interrupt_line.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <thread>
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

} // namespace
} // namespace kvmm

#include "devices/legacy/i8042.h"

#include "devices/legacy/recording_interrupt_line.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace kvmm {
namespace {

class I8042Test : public ::testing::Test {
protected:
    uint8_t in(uint64_t offset) {
        uint8_t value = 0;
        m_controller.read(offset, std::span(&value, 1));
        return value;
    }
    void out(uint64_t offset, uint8_t value) { m_controller.write(offset, std::span(&value, 1)); }

    int m_resets { 0 };
    std::shared_ptr<RecordingInterruptLine> m_irq = std::make_shared<RecordingInterruptLine>();
    I8042 m_controller { m_irq, [this] { ++m_resets; } };
};

TEST_F(I8042Test, SelfTestAnswers55WithOutputBufferFull) {
    EXPECT_EQ(in(4) & 0x01, 0);
    out(4, 0xaa);
    EXPECT_EQ(in(4) & 0x01, 1);
    EXPECT_EQ(in(0), 0x55);
    EXPECT_EQ(in(4) & 0x01, 0);
}

TEST_F(I8042Test, StatusReportsSystemFlagAndLastWriteKind) {
    EXPECT_EQ(in(4), 0x14); // system flag, unlocked, both buffers empty
    out(4, 0xad);
    EXPECT_EQ(in(4) & 0x08, 0x08); // last write was a command
    out(0, 0xf4);
    EXPECT_EQ(in(4) & 0x08, 0x00);
    EXPECT_EQ(in(4) & 0x02, 0x00); // input buffer is never busy
}

TEST_F(I8042Test, DefaultCommandByteEnablesKeyboardInterruptAndTranslation) {
    out(4, 0x20);
    EXPECT_EQ(in(0), 0x65);
}

TEST_F(I8042Test, InterfaceTestsReportNoError) {
    out(4, 0xab);
    EXPECT_EQ(in(0), 0x00);
    out(4, 0xa9);
    EXPECT_EQ(in(0), 0x00);
}

TEST_F(I8042Test, AuxEnableAndDisableShowInCommandByte) {
    out(4, 0xa8);
    out(4, 0x20);
    EXPECT_EQ(in(0) & 0x20, 0x00);
    out(4, 0xa7);
    out(4, 0x20);
    EXPECT_EQ(in(0) & 0x20, 0x20);
    out(4, 0xad);
    out(4, 0x20);
    EXPECT_EQ(in(0) & 0x10, 0x10);
    out(4, 0xae);
    out(4, 0x20);
    EXPECT_EQ(in(0) & 0x10, 0x00);
}

TEST_F(I8042Test, AuxLoopbackEchoesByteAsAuxData) {
    out(4, 0xd3);
    out(0, 0x5a);
    EXPECT_EQ(in(4) & 0x21, 0x21); // output full, from the auxiliary port
    EXPECT_FALSE(m_irq->level());  // aux data never raises IRQ 1
    EXPECT_EQ(in(0), 0x5a);
    EXPECT_EQ(in(4) & 0x21, 0x00);
}

TEST_F(I8042Test, AuxDataRaisesAuxIrqWhenEnabled) {
    auto aux_irq = std::make_shared<RecordingInterruptLine>();
    I8042 controller(
        m_irq, [] {}, aux_irq);
    auto command = [&](uint8_t port, uint8_t value) { controller.write(port, std::span(&value, 1)); };
    command(4, 0x60);
    command(0, 0x02); // aux interrupt only
    command(4, 0xd3);
    command(0, 0xa5);
    EXPECT_TRUE(aux_irq->level());
    EXPECT_FALSE(m_irq->level());
    uint8_t value = 0;
    controller.read(0, std::span(&value, 1));
    EXPECT_EQ(value, 0xa5);
    EXPECT_FALSE(aux_irq->level());
}

TEST_F(I8042Test, CommandByteCanBeWrittenAndReadBack) {
    out(4, 0x60);
    out(0, 0x44);
    out(4, 0x20);
    EXPECT_EQ(in(0), 0x44);
}

TEST_F(I8042Test, PulseResetLineRequestsReset) {
    out(4, 0xfe);
    EXPECT_EQ(m_resets, 1);
    out(4, 0xff); // pulses nothing
    EXPECT_EQ(m_resets, 1);
}

TEST_F(I8042Test, OutputPortWriteWithResetBitLowResets) {
    out(4, 0xd1);
    out(0, 0xfe);
    EXPECT_EQ(m_resets, 1);
}

TEST_F(I8042Test, KeyboardCommandsAreAcknowledgedAndRaiseIrq1) {
    out(0, 0xf2); // identify
    EXPECT_TRUE(m_irq->level());
    EXPECT_EQ(in(0), 0xfa);
    EXPECT_EQ(in(0), 0xab);
    EXPECT_EQ(in(0), 0x83);
    EXPECT_FALSE(m_irq->level());
}

TEST_F(I8042Test, OutputQueueIsBoundedWhenGuestNeverReads) {
    for (int i = 0; i < 1000; ++i)
        out(4, 0xaa);
    int drained = 0;
    while (in(4) & 0x01) {
        in(0);
        ++drained;
    }
    EXPECT_LE(drained, 16);
}

TEST_F(I8042Test, CtrlAltDelQueuesScancodes) {
    m_controller.send_ctrl_alt_del();
    std::vector<uint8_t> codes;
    while (in(4) & 0x01)
        codes.push_back(in(0));
    EXPECT_EQ(codes, (std::vector<uint8_t> { 0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d }));
}

TEST_F(I8042Test, EachQueuedByteGetsItsOwnIrqEdge) {
    m_controller.send_ctrl_alt_del();
    for (int i = 0; i < 8; ++i)
        in(0);
    size_t rising_edges = 0;
    for (size_t i = 0; i < m_irq->levels.size(); ++i)
        rising_edges += m_irq->levels[i] && (i == 0 || !m_irq->levels[i - 1]);
    EXPECT_EQ(rising_edges, 8u);
    EXPECT_FALSE(m_irq->level());
}

TEST_F(I8042Test, KeyboardEchoAndResetAnswer) {
    out(0, 0xee);
    EXPECT_EQ(in(0), 0xee);
    out(0, 0xff);
    EXPECT_EQ(in(0), 0xfa);
    EXPECT_EQ(in(0), 0xaa);
}

TEST_F(I8042Test, RandomAccessesNeverCrashAndKeepQueueBounded) {
    std::mt19937 random(42);
    for (int i = 0; i < 20000; ++i) {
        uint8_t buffer[8] {};
        size_t const width = 1u << (random() % 4);
        uint64_t const offset = random() % I8042_PORT_RANGE_LENGTH;
        if (random() % 2)
            m_controller.read(offset, std::span(buffer, width));
        else {
            buffer[0] = static_cast<uint8_t>(random());
            m_controller.write(offset, std::span<uint8_t const>(buffer, width));
        }
    }
    size_t drained = 0;
    while ((in(4) & 0x01) && drained <= I8042::OUTPUT_CAPACITY) {
        in(0);
        ++drained;
    }
    EXPECT_LE(drained, I8042::OUTPUT_CAPACITY);
    out(4, 0xaa);
    EXPECT_EQ(in(0), 0x55);
}

} // namespace
} // namespace kvmm

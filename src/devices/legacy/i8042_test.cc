#include "devices/legacy/i8042.h"

#include "devices/legacy/recording_interrupt_line.h"

#include <gtest/gtest.h>

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
    EXPECT_EQ(in(0), 0x1d);
    EXPECT_EQ(in(0), 0x38);
}

} // namespace
} // namespace kvmm

#include "devices/legacy/i8042.h"

#include "base/testing/state_round_trip.h"
#include "devices/legacy/recording_interrupt_line.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <tuple>
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

// A controller with both interrupt lines and a reset counter, for the saved-state tests.
struct Controller {
    uint8_t in(uint64_t offset) {
        uint8_t value = 0;
        i8042.read(offset, std::span(&value, 1));
        return value;
    }
    void out(uint64_t offset, uint8_t value) { i8042.write(offset, std::span(&value, 1)); }
    // Status, then data, until the output buffer is empty: what the guest sees, with both lines.
    std::vector<std::tuple<uint8_t, uint8_t, bool, bool>> drain() {
        std::vector<std::tuple<uint8_t, uint8_t, bool, bool>> seen;
        for (int i = 0; i <= static_cast<int>(I8042::OUTPUT_CAPACITY); ++i) {
            bool const keyboard = keyboard_irq->level();
            bool const aux = aux_irq->level();
            uint8_t const status = in(4);
            seen.emplace_back(status, in(0), keyboard, aux);
            if (!(status & 0x01))
                break;
        }
        return seen;
    }

    int resets { 0 };
    std::shared_ptr<RecordingInterruptLine> keyboard_irq = std::make_shared<RecordingInterruptLine>();
    std::shared_ptr<RecordingInterruptLine> aux_irq = std::make_shared<RecordingInterruptLine>();
    I8042 i8042 { keyboard_irq, [this] { ++resets; }, aux_irq };
};

TEST(I8042State, RestoredControllerHasTheSameQueuePendingCommandAndLines) {
    Controller original;
    original.out(4, 0x60);
    original.out(0, 0x47); // keyboard and aux interrupts, system flag, translate
    original.out(4, 0xd3); // an auxiliary byte at the head of the queue
    original.out(0, 0x5a);
    original.out(0, 0xf2); // identify: FA AB 83 behind it
    original.out(4, 0xd1); // write output port: waits for its data byte
    ASSERT_TRUE(original.aux_irq->level());
    ASSERT_FALSE(original.keyboard_irq->level());

    auto const saved = original.i8042.save();
    EXPECT_EQ(saved.output.size(), 4u);
    EXPECT_EQ(saved.pending_command, uint8_t { 0xd1 });
    EXPECT_TRUE(saved.last_write_was_command);
    auto const decoded = testing::round_trip(saved);
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(*decoded, saved);
    Controller copy;
    auto const restored = copy.i8042.restore(*decoded);
    ASSERT_TRUE(restored) << restored.error().message();
    EXPECT_EQ(copy.i8042.save(), saved);
    EXPECT_EQ(copy.aux_irq->levels, (std::vector<bool> { true }));
    EXPECT_EQ(copy.keyboard_irq->levels, (std::vector<bool> { false }));
    EXPECT_EQ(copy.in(4), original.in(4)); // aux data, last write a command

    // The pending 0xD1 takes its data byte in both: bit 0 clear pulls the reset line.
    original.out(0, 0x02);
    copy.out(0, 0x02);
    EXPECT_EQ(original.resets, 1);
    EXPECT_EQ(copy.resets, 1);
    original.out(4, 0xd0);
    copy.out(4, 0xd0);
    auto const expected = original.drain();
    EXPECT_EQ(copy.drain(), expected);
    ASSERT_EQ(expected.size(), 6u); // 5A FA AB 83, the output port, then empty
    EXPECT_EQ(std::get<1>(expected[0]), 0x5a);
    EXPECT_EQ(std::get<1>(expected[4]), 0x02);
}

TEST(I8042State, RestoreNeverRequestsAResetWhateverTheOutputPortHolds) {
    Controller controller;
    I8042State state;
    state.output_port = 0x00; // reset line driven low
    state.command_byte = 0x01;
    state.output = { { 0x1c, false } };
    ASSERT_TRUE(controller.i8042.restore(state));
    EXPECT_EQ(controller.resets, 0);
    EXPECT_EQ(controller.keyboard_irq->levels, (std::vector<bool> { true }));
    EXPECT_EQ(controller.aux_irq->levels, (std::vector<bool> { false }));
}

TEST(I8042State, DecodeRefusesATruncatedSectionAWrongVersionAndTooManyBytes) {
    StateWriter short_body;
    short_body.begin_section(I8042State::SECTION, I8042State::VERSION);
    short_body.u64(0);
    short_body.end_section();
    auto const truncated = testing::decode_payload<I8042State>(short_body.payload());
    ASSERT_FALSE(truncated);
    EXPECT_NE(truncated.error().message().find("i8042/command_byte: truncated"), std::string::npos)
        << truncated.error().message();

    StateWriter newer;
    newer.begin_section(I8042State::SECTION, 7);
    newer.end_section();
    auto const version = testing::decode_payload<I8042State>(newer.payload());
    ASSERT_FALSE(version);
    EXPECT_NE(version.error().message().find("i8042 (section): version 7"), std::string::npos)
        << version.error().message();

    I8042State too_many;
    too_many.output.resize(I8042::OUTPUT_CAPACITY + 1);
    auto const overlong = testing::round_trip(too_many);
    ASSERT_FALSE(overlong);
    EXPECT_NE(overlong.error().message().find("i8042/output: 17 is outside [0, 16]"), std::string::npos)
        << overlong.error().message();

    StateWriter stray;
    stray.begin_section(I8042State::SECTION, I8042State::VERSION);
    stray.u64(0);
    stray.u8(0);
    stray.u8(1);
    stray.boolean(false);
    stray.u8(0x60); // a command byte without the "pending" flag
    stray.boolean(false);
    stray.end_section();
    auto const inconsistent = testing::decode_payload<I8042State>(stray.payload());
    ASSERT_FALSE(inconsistent);
    EXPECT_NE(inconsistent.error().message().find("i8042/pending_command: 0x60 given without"), std::string::npos)
        << inconsistent.error().message();
}

TEST(I8042State, RestoreRefusesAnOverlongQueueOrAnUnknownPendingCommandAndChangesNothing) {
    Controller controller;
    controller.out(4, 0xaa);
    auto const before = controller.i8042.save();
    I8042State state;
    state.output.resize(I8042::OUTPUT_CAPACITY + 1);
    auto const overlong = controller.i8042.restore(state);
    ASSERT_FALSE(overlong);
    EXPECT_NE(overlong.error().message().find("output holds 17 bytes, more than the 16"), std::string::npos)
        << overlong.error().message();
    state = {};
    state.pending_command = 0x20; // read command byte: takes no data
    auto const unknown = controller.i8042.restore(state);
    ASSERT_FALSE(unknown);
    EXPECT_NE(unknown.error().message().find("pending_command 0x20 is not a command that takes a data byte"),
              std::string::npos)
        << unknown.error().message();
    EXPECT_EQ(controller.i8042.save(), before);
    EXPECT_EQ(controller.in(0), 0x55);
}

} // namespace
} // namespace kvmm

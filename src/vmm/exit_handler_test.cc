#include "vmm/exit_handler.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvmm {
namespace {

class RecordingDevice final : public BusDevice {
public:
    void read(uint64_t offset, std::span<uint8_t> data) override {
        for (auto& byte : data)
            byte = static_cast<uint8_t>(0x40 + offset);
    }
    void write(uint64_t offset, std::span<uint8_t const> data) override {
        for (auto byte : data)
            written.push_back({ offset, byte });
    }
    std::vector<std::pair<uint64_t, uint8_t>> written;
};

class ExitHandlerTest : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(m_pio.insert(m_device, 0x3f8, 8).has_value());
        ASSERT_TRUE(m_mmio.insert(m_device, 0xd0000000, 0x1000).has_value());
    }
    ExitAction handle(VcpuExit exit) { return handle_exit(exit, IoBuses { m_pio, m_mmio }); }

    Bus m_pio { "pio" };
    Bus m_mmio { "mmio" };
    std::shared_ptr<RecordingDevice> m_device = std::make_shared<RecordingDevice>();
};

TEST_F(ExitHandlerTest, PortWriteReachesDeviceAtOffset) {
    uint8_t const data[] = { 'A' };
    EXPECT_EQ(handle(vcpu_exit::IoOut { 0x3f9, 1, 1, data }).kind, ExitAction::Kind::Continue);
    ASSERT_EQ(m_device->written.size(), 1u);
    EXPECT_EQ(m_device->written[0].first, 1u);
    EXPECT_EQ(m_device->written[0].second, 'A');
}

TEST_F(ExitHandlerTest, StringPortWriteDeliversEveryElement) {
    uint8_t const data[] = { 'a', 'b', 'c' };
    handle(vcpu_exit::IoOut { 0x3f8, 1, 3, data });
    ASSERT_EQ(m_device->written.size(), 3u);
    EXPECT_EQ(m_device->written[2].second, 'c');
}

TEST_F(ExitHandlerTest, UnclaimedPortReadSeesAllOnes) {
    uint8_t data[2] = { 0, 0 };
    EXPECT_EQ(handle(vcpu_exit::IoIn { 0x2f8, 2, 1, data }).kind, ExitAction::Kind::Continue);
    EXPECT_EQ(data[0], 0xff);
    EXPECT_EQ(data[1], 0xff);
}

TEST_F(ExitHandlerTest, MmioReadIsFilledByDevice) {
    uint8_t data[4] {};
    handle(vcpu_exit::MmioRead { 0xd0000010, data });
    EXPECT_EQ(data[0], 0x50);
}

TEST_F(ExitHandlerTest, TripleFaultIsAGuestCrashWithReason) {
    auto action = handle(vcpu_exit::Shutdown {});
    EXPECT_EQ(action.kind, ExitAction::Kind::GuestCrashed);
    EXPECT_NE(action.detail.find("triple fault"), std::string::npos);
}

TEST_F(ExitHandlerTest, SystemEventsMapToPowerOffAndReset) {
    EXPECT_EQ(handle(vcpu_exit::SystemEvent { vcpu_exit::SystemEvent::Kind::PowerOff, 1 }).kind,
              ExitAction::Kind::PowerOff);
    EXPECT_EQ(handle(vcpu_exit::SystemEvent { vcpu_exit::SystemEvent::Kind::Reset, 2 }).kind, ExitAction::Kind::Reset);
}

TEST_F(ExitHandlerTest, InterruptedRunAsksForStateCheck) {
    EXPECT_EQ(handle(vcpu_exit::Interrupted {}).kind, ExitAction::Kind::CheckState);
}

TEST_F(ExitHandlerTest, InternalErrorKeepsKvmReason) {
    auto action = handle(vcpu_exit::InternalError { "KVM internal error: instruction emulation failed" });
    EXPECT_EQ(action.kind, ExitAction::Kind::GuestCrashed);
    EXPECT_NE(action.detail.find("emulation"), std::string::npos);
}

} // namespace
} // namespace kvmm

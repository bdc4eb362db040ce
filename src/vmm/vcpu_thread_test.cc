#include "vmm/vcpu_thread.h"

#include "hypervisor/fake/fake_vm.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

class VcpuThreadTest : public ::testing::Test {
protected:
    void SetUp() override {
        VcpuThread::install_kick_signal_handler();
        m_lifecycle = MUST(VmLifecycle::create());
    }
    std::unique_ptr<VcpuThread> make_thread(std::deque<ScriptedExit> script) {
        return std::make_unique<VcpuThread>(std::make_unique<FakeVcpu>(0, std::move(script)), IoBuses { m_pio, m_mmio },
                                            *m_lifecycle);
    }
    Bus m_pio { "pio" };
    Bus m_mmio { "mmio" };
    std::unique_ptr<VmLifecycle> m_lifecycle;
};

TEST_F(VcpuThreadTest, PowerOffEventStopsThreadAndRecordsReason) {
    auto thread = make_thread({ { ScriptedExit::Kind::IoOut, 0x80, { 1 } }, { ScriptedExit::Kind::PowerOff } });
    EXPECT_EQ(thread->state(), VcpuState::Created);
    thread->start();
    thread->join();
    EXPECT_EQ(thread->state(), VcpuState::Stopped);
    ASSERT_TRUE(m_lifecycle->reason().has_value());
    EXPECT_EQ(m_lifecycle->reason()->cause, StopReason::Cause::PowerOff);
    EXPECT_EQ(m_lifecycle->reason()->exit_status(), 0);
}

TEST_F(VcpuThreadTest, TripleFaultIsReportedAsGuestCrashWithExitStatusTwo) {
    auto thread = make_thread({ { ScriptedExit::Kind::Shutdown } });
    thread->start();
    thread->join();
    ASSERT_TRUE(m_lifecycle->reason().has_value());
    EXPECT_EQ(m_lifecycle->reason()->cause, StopReason::Cause::GuestCrashed);
    EXPECT_EQ(m_lifecycle->reason()->exit_status(), 2);
}

TEST_F(VcpuThreadTest, StopBeforeStartNeverRunsTheVcpu) {
    auto thread = make_thread({ { ScriptedExit::Kind::PowerOff } });
    thread->request_stop();
    thread->start();
    thread->join();
    EXPECT_EQ(thread->state(), VcpuState::Stopped);
    EXPECT_FALSE(m_lifecycle->reason().has_value());
}

TEST(VmLifecycle, FirstStopReasonWins) {
    auto lifecycle = MUST(VmLifecycle::create());
    lifecycle->request_stop(StopReason { StopReason::Cause::Reset, "first" });
    lifecycle->request_stop(StopReason { StopReason::Cause::GuestCrashed, "second" });
    EXPECT_EQ(lifecycle->reason()->detail, "first");
    StopReason const terminated { StopReason::Cause::HostSignal, "", 15 };
    EXPECT_EQ(terminated.exit_status(), 143);
}

} // namespace
} // namespace kvmm

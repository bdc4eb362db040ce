#include "vmm/device_manager.h"

#include "arch/x86_64/layout.h"
#include "devices/legacy/byte_sink.h"
#include "devices/virtio/console/console_device.h"
#include "devices/virtio/rng/rng_device.h"
#include "hypervisor/fake/fake_vm.h"

#include <gtest/gtest.h>

#include <string>

namespace kvmm {
namespace {

class NoDevice final : public BusDevice {
public:
    void read(uint64_t, std::span<uint8_t> data) override { std::fill(data.begin(), data.end(), 0xff); }
    void write(uint64_t, std::span<uint8_t const>) override {}
};

// A device with no state of its own: its hooks write and read nothing.
StateHooks stateless() {
    return StateHooks { [](StateWriter&) -> Expected<void> { return {}; },
                        [](StateReader&) -> Expected<void> { return {}; } };
}

class DeviceManagerTest : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(m_vm.create_irqchip_and_pit());
        m_devices = MUST(DeviceManager::create(m_vm, m_memory, m_loop));
    }
    std::unique_ptr<virtio::VirtioDevice> rng() { return std::make_unique<virtio::RngDevice>(); }
    std::unique_ptr<virtio::VirtioDevice> console() {
        return std::make_unique<virtio::ConsoleDevice>(std::shared_ptr<ByteSink>(make_null_sink()));
    }

    FakeVm m_vm;
    GuestMemory m_memory = [] { return MUST(GuestMemory::create({ { GuestAddress(0), 16 << 20 } })); }();
    EventLoop m_loop = [] { return MUST(EventLoop::create()); }();
    std::unique_ptr<DeviceManager> m_devices;
};

TEST_F(DeviceManagerTest, VirtioDevicesGetConsecutiveWindowsAndTheFreeIsaLinesInTheOrderAdded) {
    ASSERT_TRUE(m_devices->attach_port("com1", DeviceKind::Serial, std::make_shared<NoDevice>(), stateless(),
                                       PortRange { 0x3f8, 8 }, 4));
    ASSERT_TRUE(m_devices->add_virtio("rng", DeviceKind::Rng, rng()));
    ASSERT_TRUE(m_devices->add_virtio("console", DeviceKind::Console, console()));
    ASSERT_TRUE(m_devices->add_virtio("rng2", DeviceKind::Rng, rng()));
    ASSERT_TRUE(m_devices->add_virtio("rng3", DeviceKind::Rng, rng()));
    ASSERT_TRUE(m_devices->attach_virtio_devices());

    auto const resources = m_devices->virtio_mmio_resources();
    ASSERT_EQ(resources.size(), 4u);
    uint32_t const expected_lines[] = { 1, 5, 6, 7 }; // 0, 2, 3 are the platform's, 4 is COM1's
    for (size_t i = 0; i < resources.size(); ++i) {
        EXPECT_EQ(resources[i].base, x86_64::VIRTIO_MMIO_BASE + i * virtio::MmioTransport::WINDOW_SIZE);
        EXPECT_EQ(resources[i].size, virtio::MmioTransport::WINDOW_SIZE);
        EXPECT_EQ(resources[i].gsi, expected_lines[i]);
    }
    // The registry lists every device with its attachment, legacy first here.
    auto const& entries = m_devices->entries();
    ASSERT_EQ(entries.size(), 5u);
    EXPECT_EQ(entries[0].id, "com1");
    EXPECT_EQ(std::get<PortRange>(entries[0].attachment), (PortRange { 0x3f8, 8 }));
    EXPECT_EQ(entries[2].kind, DeviceKind::Console);
    EXPECT_EQ(std::get<MmioWindow>(entries[2].attachment).base, resources[1].base);
    EXPECT_EQ(entries[2].gsi, resources[1].gsi);
}

TEST_F(DeviceManagerTest, EveryQueueGetsAnIoeventfdAtQueueNotifyAndEveryLineAnIrqfd) {
    ASSERT_TRUE(m_devices->add_virtio("console", DeviceKind::Console, console()));
    ASSERT_TRUE(m_devices->attach_virtio_devices());
    auto const& transport = *m_devices->transports().at(0);
    auto const ioeventfds = m_vm.ioeventfds();
    ASSERT_EQ(ioeventfds.size(), transport.queue_count());
    for (size_t queue = 0; queue < ioeventfds.size(); ++queue) {
        EXPECT_EQ(ioeventfds[queue].address, x86_64::VIRTIO_MMIO_BASE + virtio::MmioTransport::QUEUE_NOTIFY_OFFSET);
        EXPECT_EQ(ioeventfds[queue].datamatch, queue);
        EXPECT_EQ(ioeventfds[queue].event_fd, transport.queue_notify_fd(queue));
    }
    ASSERT_EQ(m_vm.irqfds().size(), 1u);
    EXPECT_EQ(m_vm.irqfds()[0].second, m_devices->virtio_mmio_resources()[0].gsi);

    // The transport answers at its allocated window: "virt" (virtio 1.2 4.2.2, MagicValue).
    std::array<uint8_t, 4> magic {};
    ASSERT_TRUE(m_devices->mmio_bus().read(x86_64::VIRTIO_MMIO_BASE, magic));
    EXPECT_EQ(std::string(magic.begin(), magic.end()), "virt");

    // The manager takes its ioeventfds back when it goes.
    m_devices.reset();
    EXPECT_TRUE(m_vm.ioeventfds().empty());
}

TEST_F(DeviceManagerTest, IdsAreUniquePerKindNotAcrossKinds) {
    ASSERT_TRUE(m_devices->add_virtio("1", DeviceKind::Rng, rng()));
    ASSERT_TRUE(m_devices->add_virtio("1", DeviceKind::Console, console())) << "another kind may use the same id";
    auto twice = m_devices->add_virtio("1", DeviceKind::Rng, rng());
    ASSERT_FALSE(twice);
    EXPECT_EQ(twice.error().message(), "rng device id '1' is used twice");
    ASSERT_TRUE(m_devices->attach_virtio_devices());
    auto attached_twice = m_devices->attach_port("1", DeviceKind::Console, std::make_shared<NoDevice>(), stateless(),
                                                 PortRange { 0x100, 1 });
    EXPECT_FALSE(attached_twice) << "an attached device keeps its id too";
    EXPECT_FALSE(m_devices->add_virtio("", DeviceKind::Rng, rng()));
}

TEST_F(DeviceManagerTest, ALegacyDeviceCannotTakeALineOrPortsAlreadyTaken) {
    ASSERT_TRUE(m_devices->attach_port("com1", DeviceKind::Serial, std::make_shared<NoDevice>(), stateless(),
                                       PortRange { 0x3f8, 8 }, 4));
    auto same_line = m_devices->attach_port("com1b", DeviceKind::Serial, std::make_shared<NoDevice>(), stateless(),
                                            PortRange { 0x2f8, 8 }, 4);
    ASSERT_FALSE(same_line);
    EXPECT_EQ(same_line.error().message(), "serial 'com1b': interrupt line 4 is already taken by serial 'com1'");
    auto same_ports = m_devices->attach_port("com1c", DeviceKind::Serial, std::make_shared<NoDevice>(), stateless(),
                                             PortRange { 0x3fc, 8 });
    ASSERT_FALSE(same_ports);
    EXPECT_NE(same_ports.error().message().find("serial 'com1c'"), std::string::npos) << same_ports.error().message();
    EXPECT_FALSE(m_devices->attach_port("timer", DeviceKind::Rtc, std::make_shared<NoDevice>(), stateless(),
                                        PortRange { 0x40, 4 }, 0))
        << "line 0 is the platform timer's";
    EXPECT_EQ(m_devices->entries().size(), 1u) << "a refused device is not registered";
}

TEST_F(DeviceManagerTest, RuntimeOperationsNameAMissingDevice) {
    ASSERT_TRUE(m_devices->add_virtio("rng", DeviceKind::Rng, rng()));
    ASSERT_TRUE(m_devices->attach_virtio_devices());
    auto missing_disk = m_devices->update_disk_rate_limit("rootfs", RateLimitConfig {});
    ASSERT_FALSE(missing_disk);
    EXPECT_EQ(missing_disk.error().message(), "no drive 'rootfs' in this microVM");
    auto missing_net = m_devices->update_net_rate_limits("eth0", std::nullopt, std::nullopt);
    ASSERT_FALSE(missing_net);
    EXPECT_EQ(missing_net.error().message(), "no network interface 'eth0' in this microVM");
    EXPECT_EQ(m_devices->balloon(), nullptr);
    EXPECT_EQ(m_devices->console(), nullptr);
    auto const metrics = m_devices->metrics();
    ASSERT_EQ(metrics.size(), 1u);
    EXPECT_EQ(metrics[0].name, "rng");
}

TEST_F(DeviceManagerTest, MoreVirtioDevicesThanFreeLinesIsRefusedNamingTheDevice) {
    // 20 of the 24 lines are free without legacy devices: the 21st device finds none.
    for (int i = 0; i < 21; ++i)
        ASSERT_TRUE(m_devices->add_virtio(std::to_string(i), DeviceKind::Rng, rng()));
    auto attached = m_devices->attach_virtio_devices();
    ASSERT_FALSE(attached);
    EXPECT_EQ(attached.error().message(), "virtio rng '20': no free interrupt line: all 24 lines (0-23) are taken")
        << attached.error().message();
}

TEST_F(DeviceManagerTest, SaveRestoreSave_IsIdenticalAndADifferentDeviceListIsRefused) {
    auto build = [&](DeviceManager& devices, bool with_console) {
        ASSERT_TRUE(devices.attach_port("com1", DeviceKind::Serial, std::make_shared<NoDevice>(), stateless(),
                                        PortRange { 0x3f8, 8 }, 4));
        ASSERT_TRUE(devices.add_virtio("rng", DeviceKind::Rng, rng()));
        if (with_console) {
            ASSERT_TRUE(devices.add_virtio("console", DeviceKind::Console, console()));
        }
        ASSERT_TRUE(devices.attach_virtio_devices());
    };
    build(*m_devices, true);
    StateWriter first;
    ASSERT_TRUE(m_devices->save_state(first));

    FakeVm other_vm;
    ASSERT_TRUE(other_vm.create_irqchip_and_pit());
    auto same = MUST(DeviceManager::create(other_vm, m_memory, m_loop));
    build(*same, true);
    StateReader reader(first.payload());
    auto const restored = same->restore_state(reader);
    ASSERT_TRUE(restored) << restored.error().message();
    StateWriter second;
    ASSERT_TRUE(same->save_state(second));
    EXPECT_EQ(second.payload(), first.payload());

    FakeVm third_vm;
    ASSERT_TRUE(third_vm.create_irqchip_and_pit());
    auto fewer = MUST(DeviceManager::create(third_vm, m_memory, m_loop));
    build(*fewer, false);
    StateReader refused_reader(first.payload());
    auto refused = fewer->restore_state(refused_reader);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().message(), "devices: the state has 3 devices, this machine has 2");
}

TEST_F(DeviceManagerTest, ADeviceWithoutStateHooksIsRefused) {
    auto refused = m_devices->attach_port("x", DeviceKind::Rtc, std::make_shared<NoDevice>(), StateHooks {},
                                          PortRange { 0x70, 2 });
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().message(), "rtc 'x': a device needs state hooks");
}

} // namespace
} // namespace kvmm

// VirtioDevices: the VM's virtio-mmio devices, built from the configuration -
// one transport per device, each in its own MMIO window with its own GSI,
// notifications through KVM ioeventfds, interrupts through irqfds, all device
// work on the machine's event loop.
//
// Slot order is the guest's probe order (ACPI _UID order), so it decides device
// names: disks first (the first disk is /dev/vda), then network interfaces,
// entropy, console, vsock, balloon.
//
// Threading: created and destroyed on the event loop's thread while no vCPU
// runs; the transports are then reached from vCPU threads through the MMIO bus.
#pragma once

#include "base/event_loop.h"
#include "base/rate_limiter.h"
#include "devices/bus/bus.h"
#include "devices/legacy/byte_sink.h"
#include "devices/virtio/mmio_transport.h"
#include "hypervisor/vm.h"
#include "vmm/irqfd_interrupt_line.h"
#include "vmm/vm_config.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvmm {

namespace virtio {
class BalloonDevice;
class BlockDevice;
class ConsoleDevice;
class NetDevice;
class RngDevice;
} // namespace virtio

struct VirtioSlot {
    uint64_t base;
    uint32_t gsi;
};

// How many virtio devices `config` asks for.
size_t virtio_device_count(VmConfig const& config);
// The MMIO window and GSI of each of `count` devices; fails when there are more than the
// IOAPIC has free lines for.
Expected<std::vector<VirtioSlot>> virtio_slots(size_t count);

class VirtioDevices {
public:
    // `console_output` is where a virtio console writes (used only when config.virtio_console).
    static Expected<std::unique_ptr<VirtioDevices>> create(VmConfig const& config, GuestMemory const& memory, Vm& vm,
                                                           EventLoop& event_loop, Bus& mmio_bus,
                                                           std::shared_ptr<ByteSink> console_output);
    ~VirtioDevices();

    virtio::ConsoleDevice* console() const { return m_console; }
    // The balloon, if configured; its set_target_mib()/set_stats_interval() are thread-safe,
    // statistics() is read on the event-loop thread (Machine::call_on_loop).
    virtio::BalloonDevice* balloon() const { return m_balloon; }
    std::vector<std::shared_ptr<virtio::MmioTransport>> const& transports() const { return m_transports; }

    // Change the limits of a disk or a network interface, named by its configured id, while
    // the VM runs (PATCH /drives, PATCH /network-interfaces); see RateLimiter::update. Every
    // disk and interface has limiters for this, unlimited unless configured. Event-loop
    // thread (Machine::call_on_loop). Unknown ids and invalid buckets change nothing.
    Expected<void> update_disk_rate_limit(std::string_view id, RateLimitConfig const& changes);
    // Moves a running disk to the image at `path`, opened in the disk's read-only mode
    // (BlockDevice::replace_image); when `path` is the disk's own file, reads its size again
    // instead (BlockDevice::refresh_capacity). Event-loop thread, while the VM is not paused.
    Expected<void> replace_disk_image(std::string_view id, std::string const& path);
    Expected<void> update_net_rate_limits(std::string_view id, std::optional<RateLimitConfig> const& rx_changes,
                                          std::optional<RateLimitConfig> const& tx_changes);

private:
    VirtioDevices() = default;
    Expected<void> add(std::unique_ptr<virtio::VirtioDevice> device, std::string name, VirtioSlot slot,
                       GuestMemory const& memory, Vm& vm, EventLoop& event_loop, Bus& mmio_bus);

    struct Registration {
        uint64_t address;
        uint32_t queue;
        int event_fd;
    };
    // Rate limiters of devices, each with its timer registered in the event loop.
    struct Limiter {
        std::unique_ptr<RateLimiter> limiter;
        EventLoop* event_loop;
    };
    // The device configured with `id`, or an error naming it.
    Expected<virtio::BlockDevice*> disk(std::string_view id) const;
    Expected<virtio::NetDevice*> net(std::string_view id) const;
    Expected<RateLimiter*> add_limiter(RateLimitConfig const& config, EventLoop& event_loop,
                                       std::function<void()> on_unblocked);

    Vm* m_vm { nullptr };
    std::vector<Limiter> m_limiters;
    std::vector<std::unique_ptr<IrqfdInterruptLine>> m_lines;
    std::vector<std::shared_ptr<virtio::MmioTransport>> m_transports;
    std::vector<Registration> m_ioeventfds;
    std::vector<std::pair<std::string, virtio::BlockDevice*>> m_disks;
    std::vector<std::pair<std::string, virtio::NetDevice*>> m_nets;
    virtio::ConsoleDevice* m_console { nullptr };
    virtio::BalloonDevice* m_balloon { nullptr };
};

} // namespace kvmm

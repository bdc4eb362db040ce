// DeviceManager: the registry of every device of one machine, legacy and virtio, each an
// entry {id, kind, component, attachment}. It owns the port I/O and MMIO buses, hands out
// interrupt lines and MMIO windows (no fixed tables: a device gets the lowest free ones, so a
// configuration always gets the same layout), registers the fast paths (ioeventfd per queue,
// irqfd per line) and lists what it attached for the ACPI DSDT. Runtime operations (rate
// limits, drive moves, the balloon, metrics) name a device by kind and id.
//
// An attachment is a port range or an MMIO window today; a PCI function will be a third kind.
// Ids are unique per kind, as in Firecracker's API (a drive and an interface may both be "1").
//
// Phases (docs/ARCHITECTURE.md "Building a machine"): during acquire the builder adds virtio
// device models that already hold their host resources (add_virtio); attach_virtio_devices()
// then gives each its window and line, and attach_port()/attach_mmio() place the fixed legacy
// devices. Nothing here opens a host file after acquire.
//
// Threading: built on the builder thread; afterwards every method runs on the event-loop
// thread (Machine::call_on_loop), which is the only thread that touches a device model.
// vCPU threads reach device registers only through the buses (pio_bus(), mmio_bus()).
// Destruction: after the vCPUs have stopped; it unregisters its ioeventfds and timers.
#pragma once

#include "base/event_loop.h"
#include "base/expected.h"
#include "base/rate_limiter.h"
#include "base/state_io.h"
#include "devices/bus/bus.h"
#include "devices/virtio/mmio_transport.h"
#include "hypervisor/vm.h"
#include "memory/guest_memory.h"
#include "vmm/irqfd_interrupt_line.h"
#include "vmm/resource_allocator.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kvmm {

namespace virtio {
class BalloonDevice;
class BlockDevice;
class ConsoleDevice;
class NetDevice;
} // namespace virtio

enum class DeviceKind {
    Serial,
    Keyboard,
    Rtc,
    PowerControl,
    BootMarker,
    Pvpanic,
    Block,
    Net,
    Rng,
    Console,
    Vsock,
    Balloon,
    FwCfg,
    DebugConsole
};

// "serial", "i8042", ..., "block", "net": what logs, metrics and errors call a kind.
std::string_view device_kind_name(DeviceKind kind);

struct PortRange {
    uint16_t base;
    uint16_t length;
    bool operator==(PortRange const&) const = default;
};
struct MmioWindow {
    uint64_t base;
    uint64_t length;
    bool operator==(MmioWindow const&) const = default;
};
using Attachment = std::variant<PortRange, MmioWindow>;

// What the registry says about one attached device.
struct DeviceEntry {
    std::string id;
    DeviceKind kind;
    Attachment attachment;
    std::optional<uint32_t> gsi;
};

// How one device's state is saved and restored (docs/ARCHITECTURE.md "Saved state"): save
// writes the device's sections, restore reads them back, refusing (naming the field) what this
// device cannot hold. Event-loop thread, vCPUs paused.
struct StateHooks {
    std::function<Expected<void>(StateWriter&)> save;
    std::function<Expected<void>(StateReader&)> restore;
};

// The hooks of a device with `State save() const`, `Expected<void> restore(State const&)` and a
// State that encodes and decodes itself (the legacy devices).
template <typename Device>
StateHooks state_hooks_of(std::shared_ptr<Device> const& device) {
    using State = decltype(device->save());
    return StateHooks {
        [device](StateWriter& writer) -> Expected<void> {
            device->save().encode(writer);
            return {};
        },
        [device](StateReader& reader) -> Expected<void> {
            auto const state = TRY(State::decode(reader));
            return device->restore(state);
        },
    };
}

struct DeviceMetrics {
    std::string name;
    std::vector<std::pair<std::string, uint64_t>> counters;
};

// A virtio-mmio device as the DSDT describes it (arch/x86_64/acpi: LNRO0005 with _CRS).
struct VirtioMmioResource {
    uint64_t base;
    uint64_t size;
    uint32_t gsi;
};

class DeviceManager {
public:
    // `vm`, `memory` and `event_loop` must outlive the manager.
    static Expected<std::unique_ptr<DeviceManager>> create(Vm& vm, GuestMemory const& memory, EventLoop& event_loop);
    ~DeviceManager();
    DeviceManager(DeviceManager const&) = delete;
    DeviceManager& operator=(DeviceManager const&) = delete;

    // Acquire phase: a virtio device model, attached later in the order added (the guest's
    // probe order: ACPI _UID order decides /dev/vda, eth0 ...). Fails on a duplicate id.
    Expected<void> add_virtio(std::string id, DeviceKind kind, std::unique_ptr<virtio::VirtioDevice> device);
    // A rate limiter whose timer the event loop serves, calling `on_unblocked` after refilling;
    // owned by the manager (for devices whose limit is not part of the device model).
    Expected<RateLimiter*> add_limiter(RateLimitConfig const& config, std::function<void()> on_unblocked);

    // Attach phase. A legacy device at fixed ports or a fixed MMIO window, with the ISA line
    // it raises (reserved, so no virtio device gets it) and its state hooks (both required:
    // a device whose state is forgotten would come back from a snapshot reset).
    Expected<void> attach_port(std::string id, DeviceKind kind, std::shared_ptr<BusDevice> device, StateHooks state,
                               PortRange ports, std::optional<uint32_t> gsi = std::nullopt);
    Expected<void> attach_mmio(std::string id, DeviceKind kind, std::shared_ptr<BusDevice> device, StateHooks state,
                               MmioWindow window, std::optional<uint32_t> gsi = std::nullopt);
    // Gives every added virtio device a transport, an MMIO window, an interrupt line (irqfd)
    // and an ioeventfd per queue.
    Expected<void> attach_virtio_devices();

    Bus& pio_bus() { return m_pio_bus; }
    Bus& mmio_bus() { return m_mmio_bus; }
    std::vector<DeviceEntry> const& entries() const { return m_entries; }
    // The attached virtio-mmio devices in probe order, for the DSDT.
    std::vector<VirtioMmioResource> virtio_mmio_resources() const;

    // Runtime operations, event-loop thread. Unknown ids and invalid limits change nothing.
    Expected<virtio::BlockDevice*> disk(std::string_view id) const;
    Expected<virtio::NetDevice*> net(std::string_view id) const;
    virtio::BalloonDevice* balloon() const;
    virtio::ConsoleDevice* console() const;
    // PATCH /drives rate_limiter (RateLimiter::update).
    Expected<void> update_disk_rate_limit(std::string_view id, RateLimitConfig const& changes);
    // PATCH /drives path_on_host: the image at `path`, opened in the disk's read-only mode
    // (BlockDevice::replace_image); when `path` is the disk's own file, its size is read again.
    Expected<void> replace_disk_image(std::string_view id, std::string const& path);
    // PATCH /network-interfaces: both limits are checked before either changes.
    Expected<void> update_net_rate_limits(std::string_view id, std::optional<RateLimitConfig> const& rx_changes,
                                          std::optional<RateLimitConfig> const& tx_changes);
    // Every virtio device's counters and its transport's command counters, in probe order;
    // disks and interfaces are called block_ID and net_ID, the others by their kind.
    std::vector<DeviceMetrics> metrics() const;
    std::vector<std::shared_ptr<virtio::MmioTransport>> const& transports() const { return m_transports; }

    // Saved state: section "devices" with every entry's kind and id followed by its own
    // sections, in registry order, then the manager's rate limiters. Event-loop thread, vCPUs
    // paused; save_state() first runs the resets and activations drivers queued (they are
    // part of what the guest did). restore_state() refuses a state whose device list differs
    // from this machine's (naming the first difference); it is for a machine that has not run,
    // and one refused half-way is to be discarded.
    Expected<void> save_state(StateWriter& writer);
    Expected<void> restore_state(StateReader& reader);

private:
    DeviceManager(Vm& vm, GuestMemory const& memory, EventLoop& event_loop);

    Expected<void> claim_id(std::string const& id, DeviceKind kind) const;
    Expected<void> attach_fixed(std::string id, DeviceKind kind, StateHooks state, Attachment attachment,
                                std::optional<uint32_t> gsi, std::function<Expected<void>()> insert);
    Expected<void> attach_one_virtio(std::string const& id, DeviceKind kind,
                                     std::unique_ptr<virtio::VirtioDevice> device);
    virtio::VirtioDevice* find_device(DeviceKind kind, std::string_view id) const;

    struct PendingVirtio {
        std::string id;
        DeviceKind kind;
        std::unique_ptr<virtio::VirtioDevice> device;
    };
    struct VirtioEntry {
        std::string id;
        DeviceKind kind;
        virtio::VirtioDevice* device;
        uint64_t base;
        uint32_t gsi;
    };
    struct Registration {
        uint64_t address;
        uint32_t queue;
        int event_fd;
    };

    Vm& m_vm;
    GuestMemory const& m_memory;
    EventLoop& m_event_loop;
    Bus m_pio_bus { "port I/O" };
    Bus m_mmio_bus { "MMIO" };
    InterruptAllocator m_interrupts;
    MmioAllocator m_mmio_windows;
    std::vector<DeviceEntry> m_entries;
    std::vector<StateHooks> m_state_hooks; // one per entry, same index
    std::vector<PendingVirtio> m_pending;
    std::vector<VirtioEntry> m_virtio;
    std::vector<std::unique_ptr<RateLimiter>> m_limiters;
    // Declared after the limiters, so their timers leave the loop before they close.
    std::vector<EventLoop::Registration> m_limiter_registrations;
    std::vector<std::unique_ptr<IrqfdInterruptLine>> m_lines;
    std::vector<std::shared_ptr<virtio::MmioTransport>> m_transports;
    std::vector<Registration> m_ioeventfds;
};

} // namespace kvmm

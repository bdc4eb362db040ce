#include "vmm/device_manager.h"

#include "arch/x86_64/layout.h"
#include "backends/disk/disk_image.h"
#include "config/vm_config.h"
#include "devices/virtio/balloon/balloon_device.h"
#include "devices/virtio/block/block_device.h"
#include "devices/virtio/console/console_device.h"
#include "devices/virtio/net/net_device.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>

namespace kvmm {

namespace {

// The in-kernel IOAPIC has 24 pins (GSIs 0-23). The ISA lines of the PC platform stay out of
// the virtio pool whether or not kvmm emulates their device: 0 timer, 2 cascade/PIT, 3 COM2,
// 8 RTC; COM1 (4) and the keyboard (1) are reserved by their devices when attached. Virtio
// lines are edge-triggered, so none is ever shared.
constexpr uint32_t IOAPIC_PIN_COUNT = 24;
constexpr std::pair<uint32_t, char const*> PLATFORM_LINES[] = {
    { 0, "the timer" },
    { 2, "the PIC cascade" },
    { 3, "COM2" },
    { 8, "the RTC" },
};
// COM1 and the keyboard reserve one line each when attached (machine.cc); the rest is the
// virtio pool, whose size the config library's validate() enforces for every entry point.
constexpr size_t LEGACY_DEVICE_LINES = 2;
static_assert(IOAPIC_PIN_COUNT - std::size(PLATFORM_LINES) - LEGACY_DEVICE_LINES == MAX_VIRTIO_DEVICES);

} // namespace

std::string_view device_kind_name(DeviceKind kind) {
    switch (kind) {
    case DeviceKind::Serial:
        return "serial";
    case DeviceKind::Keyboard:
        return "i8042";
    case DeviceKind::Rtc:
        return "rtc";
    case DeviceKind::PowerControl:
        return "power-control";
    case DeviceKind::BootMarker:
        return "boot-marker";
    case DeviceKind::Pvpanic:
        return "pvpanic";
    case DeviceKind::Block:
        return "block";
    case DeviceKind::Net:
        return "net";
    case DeviceKind::Rng:
        return "rng";
    case DeviceKind::Console:
        return "console";
    case DeviceKind::Vsock:
        return "vsock";
    case DeviceKind::Balloon:
        return "balloon";
    case DeviceKind::FwCfg:
        return "fw-cfg";
    case DeviceKind::DebugConsole:
        return "debug-console";
    }
    return "unknown";
}

DeviceManager::DeviceManager(Vm& vm, GuestMemory const& memory, EventLoop& event_loop)
    : m_vm(vm), m_memory(memory), m_event_loop(event_loop), m_interrupts(0, IOAPIC_PIN_COUNT - 1),
      m_mmio_windows(x86_64::VIRTIO_MMIO_BASE, x86_64::IOAPIC_ADDRESS) {}

Expected<std::unique_ptr<DeviceManager>> DeviceManager::create(Vm& vm, GuestMemory const& memory,
                                                               EventLoop& event_loop) {
    std::unique_ptr<DeviceManager> manager(new DeviceManager(vm, memory, event_loop));
    for (auto const& [gsi, owner] : PLATFORM_LINES)
        TRY(manager->m_interrupts.reserve(gsi, owner));
    return manager;
}

DeviceManager::~DeviceManager() {
    for (auto const& registration : m_ioeventfds)
        (void)m_vm.unregister_ioeventfd(registration.address, 4, registration.queue, registration.event_fd);
}

Expected<void> DeviceManager::claim_id(std::string const& id, DeviceKind kind) const {
    if (id.empty())
        return Error::format("a {} device needs an id", device_kind_name(kind));
    auto const same = [&](auto const& entry) { return entry.kind == kind && entry.id == id; };
    if (std::any_of(m_entries.begin(), m_entries.end(), same) || std::any_of(m_pending.begin(), m_pending.end(), same))
        return Error::format("{} device id '{}' is used twice", device_kind_name(kind), id);
    return {};
}

Expected<void> DeviceManager::add_virtio(std::string id, DeviceKind kind,
                                         std::unique_ptr<virtio::VirtioDevice> device) {
    TRY(claim_id(id, kind));
    m_pending.push_back(PendingVirtio { std::move(id), kind, std::move(device) });
    return {};
}

Expected<RateLimiter*> DeviceManager::add_limiter(RateLimitConfig const& config, std::function<void()> on_unblocked) {
    auto limiter = std::make_unique<RateLimiter>(TRY(RateLimiter::create(config)));
    auto* raw = limiter.get();
    auto registration = TRY(m_event_loop.watch(raw->timer_fd(), [raw, on_unblocked = std::move(on_unblocked)] {
        raw->on_timer();
        on_unblocked();
    }));
    m_limiters.push_back(std::move(limiter));
    m_limiter_registrations.push_back(std::move(registration));
    return raw;
}

Expected<void> DeviceManager::attach_fixed(std::string id, DeviceKind kind, StateHooks state, Attachment attachment,
                                           std::optional<uint32_t> gsi, std::function<Expected<void>()> insert) {
    TRY(claim_id(id, kind));
    auto const owner = fmt::format("{} '{}'", device_kind_name(kind), id);
    if (!state.save || !state.restore)
        return Error::format("{}: a device needs state hooks", owner);
    if (gsi)
        TRY(m_interrupts.reserve(*gsi, owner));
    TRY(insert().with_context(owner));
    m_entries.push_back(DeviceEntry { std::move(id), kind, attachment, gsi });
    m_state_hooks.push_back(std::move(state));
    return {};
}

Expected<void> DeviceManager::attach_port(std::string id, DeviceKind kind, std::shared_ptr<BusDevice> device,
                                          StateHooks state, PortRange ports, std::optional<uint32_t> gsi) {
    return attach_fixed(std::move(id), kind, std::move(state), ports, gsi,
                        [&] { return m_pio_bus.insert(std::move(device), ports.base, ports.length); });
}

Expected<void> DeviceManager::attach_mmio(std::string id, DeviceKind kind, std::shared_ptr<BusDevice> device,
                                          StateHooks state, MmioWindow window, std::optional<uint32_t> gsi) {
    return attach_fixed(std::move(id), kind, std::move(state), window, gsi,
                        [&] { return m_mmio_bus.insert(std::move(device), window.base, window.length); });
}

Expected<void> DeviceManager::attach_virtio_devices() {
    auto pending = std::move(m_pending);
    m_pending.clear();
    for (auto& entry : pending)
        TRY(attach_one_virtio(entry.id, entry.kind, std::move(entry.device)));
    return {};
}

Expected<void> DeviceManager::attach_one_virtio(std::string const& id, DeviceKind kind,
                                                std::unique_ptr<virtio::VirtioDevice> device) {
    // The transport's name is what logs and metrics call the device: its id for disks and
    // interfaces (there may be several), the kind for the others.
    bool const named_by_id = kind == DeviceKind::Block || kind == DeviceKind::Net;
    std::string name = named_by_id ? id : std::string(device_kind_name(kind));
    auto const owner = fmt::format("virtio {} '{}'", device_kind_name(kind), id);
    uint32_t const gsi = TRY(m_interrupts.allocate(owner));
    uint64_t const base =
        TRY(m_mmio_windows.allocate(virtio::MmioTransport::WINDOW_SIZE, virtio::MmioTransport::WINDOW_SIZE, owner));
    auto line = TRY(IrqfdInterruptLine::create(m_vm, gsi).with_context(owner));
    auto* const model = device.get();
    std::shared_ptr<virtio::MmioTransport> transport =
        TRY(virtio::MmioTransport::create(name, std::move(device), m_memory, *line, m_event_loop));
    // A notification is a 4-byte write of the queue index to QueueNotify (virtio 1.2 4.2.2);
    // with an ioeventfd per queue the vCPU never leaves the kernel for it.
    uint64_t const notify_address = base + virtio::MmioTransport::QUEUE_NOTIFY_OFFSET;
    for (size_t queue = 0; queue < transport->queue_count(); ++queue) {
        int const fd = transport->queue_notify_fd(queue);
        auto registered = m_vm.register_ioeventfd(notify_address, 4, queue, fd);
        if (!registered) { // the transport still serves notifications through MMIO exits
            spdlog::warn("{}: {}; queue {} notifications take the slow path", owner, registered.error().message(),
                         queue);
            continue;
        }
        m_ioeventfds.push_back(Registration { notify_address, static_cast<uint32_t>(queue), fd });
    }
    TRY(m_mmio_bus.insert(transport, base, virtio::MmioTransport::WINDOW_SIZE).with_context(owner));
    spdlog::debug("{} at {:#x}, GSI {}", owner, base, gsi);
    m_lines.push_back(std::move(line));
    m_transports.push_back(std::move(transport));
    m_virtio.push_back(VirtioEntry { id, kind, model, base, gsi });
    m_entries.push_back(DeviceEntry { id, kind, MmioWindow { base, virtio::MmioTransport::WINDOW_SIZE }, gsi });
    auto* const raw_transport = m_transports.back().get();
    m_state_hooks.push_back(StateHooks {
        [raw_transport](StateWriter& writer) { return raw_transport->save_state(writer); },
        [raw_transport](StateReader& reader) { return raw_transport->restore_state(reader); },
    });
    return {};
}

std::vector<VirtioMmioResource> DeviceManager::virtio_mmio_resources() const {
    std::vector<VirtioMmioResource> resources;
    for (auto const& entry : m_virtio)
        resources.push_back(VirtioMmioResource { entry.base, virtio::MmioTransport::WINDOW_SIZE, entry.gsi });
    return resources;
}

virtio::VirtioDevice* DeviceManager::find_device(DeviceKind kind, std::string_view id) const {
    auto found = std::find_if(m_virtio.begin(), m_virtio.end(),
                              [&](auto const& entry) { return entry.kind == kind && entry.id == id; });
    return found == m_virtio.end() ? nullptr : found->device;
}

Expected<virtio::BlockDevice*> DeviceManager::disk(std::string_view id) const {
    auto* device = find_device(DeviceKind::Block, id);
    if (!device)
        return Error::format("no drive '{}' in this microVM", id);
    return static_cast<virtio::BlockDevice*>(device);
}

Expected<virtio::NetDevice*> DeviceManager::net(std::string_view id) const {
    auto* device = find_device(DeviceKind::Net, id);
    if (!device)
        return Error::format("no network interface '{}' in this microVM", id);
    return static_cast<virtio::NetDevice*>(device);
}

virtio::BalloonDevice* DeviceManager::balloon() const {
    auto found = std::find_if(m_virtio.begin(), m_virtio.end(),
                              [](auto const& entry) { return entry.kind == DeviceKind::Balloon; });
    return found == m_virtio.end() ? nullptr : static_cast<virtio::BalloonDevice*>(found->device);
}

virtio::ConsoleDevice* DeviceManager::console() const {
    auto found = std::find_if(m_virtio.begin(), m_virtio.end(),
                              [](auto const& entry) { return entry.kind == DeviceKind::Console; });
    return found == m_virtio.end() ? nullptr : static_cast<virtio::ConsoleDevice*>(found->device);
}

Expected<void> DeviceManager::update_disk_rate_limit(std::string_view id, RateLimitConfig const& changes) {
    auto* device = TRY(disk(id));
    return device->rate_limiter()->update(changes).with_context(fmt::format("drive '{}' rate_limiter", id));
}

Expected<void> DeviceManager::replace_disk_image(std::string_view id, std::string const& path) {
    auto* device = TRY(disk(id));
    auto const context = fmt::format("drive '{}' path_on_host {}", id, path);
    if (device->uses_image(path))
        return device->refresh_capacity().with_context(context);
    bool const read_only = (device->features() & virtio::feature_bit(virtio::BLOCK_FEATURE_RO)) != 0;
    auto image = TRY(DiskImage::open(path, read_only, device->image_format()).with_context(context));
    return device->replace_image(std::move(image)).with_context(context);
}

Expected<void> DeviceManager::update_net_rate_limits(std::string_view id,
                                                     std::optional<RateLimitConfig> const& rx_changes,
                                                     std::optional<RateLimitConfig> const& tx_changes) {
    auto* device = TRY(net(id));
    auto const context = [&](char const* direction) {
        return fmt::format("network interface '{}' {}_rate_limiter", id, direction);
    };
    if (rx_changes)
        TRY(RateLimiter::validate(*rx_changes).with_context(context("rx")));
    if (tx_changes)
        TRY(RateLimiter::validate(*tx_changes).with_context(context("tx")));
    if (rx_changes)
        TRY(device->rx_rate_limiter()->update(*rx_changes).with_context(context("rx")));
    if (tx_changes)
        TRY(device->tx_rate_limiter()->update(*tx_changes).with_context(context("tx")));
    return {};
}

std::vector<DeviceMetrics> DeviceManager::metrics() const {
    std::vector<DeviceMetrics> devices;
    for (size_t i = 0; i < m_transports.size(); ++i) {
        auto const& transport = m_transports[i];
        auto const& entry = m_virtio[i];
        // Disks and interfaces are named by kind and id, as Firecracker's block_ID and net_ID
        // metrics: ids are unique per kind only, so a drive and an interface may share one.
        bool const per_id = entry.kind == DeviceKind::Block || entry.kind == DeviceKind::Net;
        DeviceMetrics device { per_id ? fmt::format("{}_{}", device_kind_name(entry.kind), entry.id)
                                      : transport->name(),
                               {} };
        for (auto const& counter : transport->device().counters())
            device.counters.emplace_back(std::string(counter.name), counter.value);
        // Resets and activations a driver queued faster than they ran (see MmioTransport::post).
        device.counters.emplace_back("commands_coalesced", transport->commands_coalesced());
        device.counters.emplace_back("commands_posted", transport->commands_posted());
        device.counters.emplace_back("activations", transport->activations());
        devices.push_back(std::move(device));
    }
    return devices;
}

namespace {

constexpr std::string_view DEVICES_SECTION = "devices";
constexpr uint32_t DEVICES_VERSION = 1;
// Bounds what a state file can make the reader allocate or loop over.
constexpr uint32_t MAX_SAVED_DEVICES = 4096;
constexpr uint64_t MAX_SAVED_ID_LENGTH = 4096;

} // namespace

Expected<void> DeviceManager::save_state(StateWriter& writer) {
    if (!m_pending.empty())
        return Error::format("{} virtio devices are not attached yet", m_pending.size());
    for (auto const& transport : m_transports)
        transport->run_pending_commands();
    writer.begin_section(DEVICES_SECTION, DEVICES_VERSION);
    writer.u64(m_entries.size());
    for (size_t i = 0; i < m_entries.size(); ++i) {
        auto const& entry = m_entries[i];
        writer.string(device_kind_name(entry.kind));
        writer.string(entry.id);
        TRY(m_state_hooks[i].save(writer).with_context(fmt::format("{} '{}'", device_kind_name(entry.kind), entry.id)));
    }
    writer.u64(m_limiters.size());
    for (auto const& limiter : m_limiters)
        limiter->save().encode(writer);
    writer.end_section();
    return {};
}

Expected<void> DeviceManager::restore_state(StateReader& reader) {
    TRY(reader.begin_section(DEVICES_SECTION, DEVICES_VERSION));
    auto const count = TRY(reader.u64_in_range("device count", 0, MAX_SAVED_DEVICES));
    if (count != m_entries.size())
        return Error::format("devices: the state has {} devices, this machine has {}", count, m_entries.size());
    for (size_t i = 0; i < m_entries.size(); ++i) {
        auto const& entry = m_entries[i];
        auto const kind = TRY(reader.string("device kind", MAX_SAVED_ID_LENGTH));
        auto const id = TRY(reader.string("device id", MAX_SAVED_ID_LENGTH));
        if (kind != device_kind_name(entry.kind) || id != entry.id)
            return Error::format("devices: device {} of the state is {} '{}', this machine's is {} '{}'", i, kind, id,
                                 device_kind_name(entry.kind), entry.id);
        TRY(m_state_hooks[i].restore(reader).with_context(fmt::format("{} '{}'", kind, id)));
    }
    auto const limiters = TRY(reader.u64_in_range("rate limiter count", 0, MAX_SAVED_DEVICES));
    if (limiters != m_limiters.size())
        return Error::format("devices: the state has {} rate limiters, this machine has {}", limiters,
                             m_limiters.size());
    for (auto& limiter : m_limiters) {
        auto const state = TRY(RateLimiterState::decode(reader));
        TRY(limiter->restore(state));
    }
    return reader.end_section();
}

} // namespace kvmm

#include "vmm/virtio_devices.h"

#include "arch/x86_64/layout.h"
#include "backends/disk/disk_image.h"
#include "backends/net/mac_address.h"
#include "backends/net/tap.h"
#include "devices/virtio/balloon/balloon_device.h"
#include "devices/virtio/block/block_device.h"
#include "devices/virtio/console/console_device.h"
#include "devices/virtio/net/net_device.h"
#include "devices/virtio/rng/rng_device.h"
#include "devices/virtio/vsock/vsock_device.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>

namespace kvmm {

namespace {

// IOAPIC pins free for virtio: everything above the ISA devices' lines (0 timer, 1 keyboard,
// 2 cascade/PIT, 3-4 serial, 8 RTC) up to the in-kernel IOAPIC's 24 pins. Edge-triggered,
// so a pin is never shared.
constexpr std::array<uint32_t, 18> VIRTIO_GSIS { 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23 };

} // namespace

size_t virtio_device_count(VmConfig const& config) {
    return config.disks.size() + config.nets.size() + (config.rng ? 1 : 0) + (config.virtio_console ? 1 : 0) +
           (config.vsock ? 1 : 0) + (config.balloon ? 1 : 0);
}

Expected<std::vector<VirtioSlot>> virtio_slots(size_t count) {
    if (count > VIRTIO_GSIS.size())
        return Error::format("{} virtio devices requested; kvmm has interrupt lines for at most {}", count,
                             VIRTIO_GSIS.size());
    std::vector<VirtioSlot> slots;
    for (size_t i = 0; i < count; ++i)
        slots.push_back(
            VirtioSlot { x86_64::VIRTIO_MMIO_BASE + i * virtio::MmioTransport::WINDOW_SIZE, VIRTIO_GSIS[i] });
    return slots;
}

Expected<std::unique_ptr<VirtioDevices>> VirtioDevices::create(VmConfig const& config, GuestMemory const& memory,
                                                               Vm& vm, EventLoop& event_loop, Bus& mmio_bus,
                                                               std::shared_ptr<ByteSink> console_output) {
    auto const slots = TRY(virtio_slots(virtio_device_count(config)));
    std::unique_ptr<VirtioDevices> devices(new VirtioDevices());
    devices->m_vm = &vm;
    size_t next = 0;
    auto add = [&](std::unique_ptr<virtio::VirtioDevice> device, std::string name) -> Expected<void> {
        return devices->add(std::move(device), std::move(name), slots[next++], memory, vm, event_loop, mmio_bus);
    };
    for (auto const& disk : config.disks) {
        auto context = fmt::format("disk '{}' ({})", disk.id, disk.path);
        auto image = TRY(DiskImage::open(disk.path, disk.read_only).with_context(context));
        virtio::BlockOptions options;
        options.engine = disk.engine == DiskConfig::Engine::IoUring ? DiskEngineKind::IoUring : DiskEngineKind::Sync;
        options.write_through = disk.cache == DiskConfig::CacheMode::WriteThrough;
        options.serial = disk.serial.value_or(disk.id);
        // Unlimited unless configured; always there so that PATCH /drives can set limits.
        options.rate_limiter.emplace(TRY(RateLimiter::create(disk.rate_limit).with_context(context)));
        auto device =
            TRY(virtio::BlockDevice::create(std::move(image), event_loop, std::move(options)).with_context(context));
        spdlog::info("{}: {} sectors, {} engine{}", context, device->capacity_sectors(),
                     device->engine_kind() == DiskEngineKind::IoUring ? "io_uring" : "sync",
                     disk.read_only ? ", read-only" : "");
        devices->m_disks.emplace_back(disk.id, device.get());
        TRY(add(std::move(device), disk.id));
    }
    for (auto const& net : config.nets) {
        auto context = fmt::format("network interface '{}'", net.id);
        auto tap = net.tap_fd ? TRY(Tap::from_fd(*net.tap_fd).with_context(context))
                              : TRY(Tap::open(net.tap_name).with_context(context));
        virtio::NetDeviceOptions options;
        options.mac = net.mac ? *net.mac : TRY(generate_mac_address());
        // Unlimited unless configured; always there so that PATCH /network-interfaces can set limits.
        options.rx_rate_limiter.emplace(TRY(RateLimiter::create(net.rx_rate_limit).with_context(context)));
        options.tx_rate_limiter.emplace(TRY(RateLimiter::create(net.tx_rate_limit).with_context(context)));
        auto device = TRY(virtio::NetDevice::create(std::move(tap), std::move(options), event_loop));
        spdlog::info("{}: TAP {}, MAC {}", context, device->tap().name(), format_mac_address(device->mac()));
        devices->m_nets.emplace_back(net.id, device.get());
        TRY(add(std::move(device), net.id));
    }
    if (config.rng) {
        virtio::RngDevice::Budget budget;
        // The device exists only after its budget does; the limiter's timer reaches it here.
        auto device_slot = std::make_shared<virtio::RngDevice*>(nullptr);
        if (!config.rng->rate_limit.empty()) {
            auto* limiter = TRY(devices->add_limiter(config.rng->rate_limit, event_loop, [device_slot] {
                if (*device_slot)
                    (*device_slot)->process_queue(0); // retry the requests the limit deferred
            }));
            budget = [limiter](uint64_t bytes) { return limiter->consume(bytes); };
        }
        auto device = std::make_unique<virtio::RngDevice>(virtio::RngDevice::EntropySource {}, std::move(budget));
        *device_slot = device.get();
        TRY(add(std::move(device), "rng"));
    }
    if (config.virtio_console) {
        auto console = std::make_unique<virtio::ConsoleDevice>(std::move(console_output));
        devices->m_console = console.get();
        TRY(add(std::move(console), "console"));
    }
    if (config.vsock) {
        auto device =
            TRY(virtio::vsock::VsockDevice::create(event_loop, config.vsock->guest_cid, config.vsock->uds_path)
                    .with_context("vsock"));
        TRY(add(std::move(device), "vsock"));
    }
    if (config.balloon) {
        virtio::BalloonOptions options;
        options.target_mib = config.balloon->target_mib;
        options.deflate_on_oom = config.balloon->deflate_on_oom;
        options.free_page_reporting = config.balloon->free_page_reporting;
        options.stats_interval = std::chrono::seconds(config.balloon->stats_polling_interval_s);
        auto device = TRY(virtio::BalloonDevice::create(event_loop, options).with_context("balloon"));
        devices->m_balloon = device.get();
        TRY(add(std::move(device), "balloon"));
    }
    return devices;
}

Expected<void> VirtioDevices::add(std::unique_ptr<virtio::VirtioDevice> device, std::string name, VirtioSlot slot,
                                  GuestMemory const& memory, Vm& vm, EventLoop& event_loop, Bus& mmio_bus) {
    auto line = TRY(IrqfdInterruptLine::create(vm, slot.gsi).with_context(fmt::format("virtio {}", name)));
    std::shared_ptr<virtio::MmioTransport> transport =
        TRY(virtio::MmioTransport::create(name, std::move(device), memory, *line, event_loop));
    // A notification is a 4-byte write of the queue index to QueueNotify (4.2.2); with an
    // ioeventfd per queue the vCPU never leaves the kernel for it.
    uint64_t const notify_address = slot.base + virtio::MmioTransport::QUEUE_NOTIFY_OFFSET;
    for (size_t queue = 0; queue < transport->queue_count(); ++queue) {
        int const fd = transport->queue_notify_fd(queue);
        auto registered = vm.register_ioeventfd(notify_address, 4, queue, fd);
        if (!registered) { // the transport still serves notifications through MMIO exits
            spdlog::warn("virtio {}: {}; queue {} notifications take the slow path", name, registered.error().message(),
                         queue);
            continue;
        }
        m_ioeventfds.push_back(Registration { notify_address, static_cast<uint32_t>(queue), fd });
    }
    TRY(mmio_bus.insert(transport, slot.base, virtio::MmioTransport::WINDOW_SIZE));
    spdlog::debug("virtio {} at {:#x}, GSI {}", name, slot.base, slot.gsi);
    m_lines.push_back(std::move(line));
    m_transports.push_back(std::move(transport));
    return {};
}

Expected<virtio::BlockDevice*> VirtioDevices::disk(std::string_view id) const {
    auto disk = std::find_if(m_disks.begin(), m_disks.end(), [&](auto const& entry) { return entry.first == id; });
    if (disk == m_disks.end())
        return Error::format("no drive '{}' in this microVM", id);
    return disk->second;
}

Expected<virtio::NetDevice*> VirtioDevices::net(std::string_view id) const {
    auto net = std::find_if(m_nets.begin(), m_nets.end(), [&](auto const& entry) { return entry.first == id; });
    if (net == m_nets.end())
        return Error::format("no network interface '{}' in this microVM", id);
    return net->second;
}

Expected<void> VirtioDevices::update_disk_rate_limit(std::string_view id, RateLimitConfig const& changes) {
    auto* device = TRY(disk(id));
    return device->rate_limiter()->update(changes).with_context(fmt::format("drive '{}' rate_limiter", id));
}

Expected<void> VirtioDevices::replace_disk_image(std::string_view id, std::string const& path) {
    auto* device = TRY(disk(id));
    auto const context = fmt::format("drive '{}' path_on_host {}", id, path);
    if (device->uses_image(path))
        return device->refresh_capacity().with_context(context);
    bool const read_only = (device->features() & virtio::feature_bit(virtio::BLOCK_FEATURE_RO)) != 0;
    auto image = TRY(DiskImage::open(path, read_only).with_context(context));
    return device->replace_image(std::move(image)).with_context(context);
}

Expected<void> VirtioDevices::update_net_rate_limits(std::string_view id,
                                                     std::optional<RateLimitConfig> const& rx_changes,
                                                     std::optional<RateLimitConfig> const& tx_changes) {
    auto* device = TRY(net(id));
    // Both are checked before either changes, so a bad tx limit leaves rx as it was.
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

Expected<RateLimiter*> VirtioDevices::add_limiter(RateLimitConfig const& config, EventLoop& event_loop,
                                                  std::function<void()> on_unblocked) {
    auto limiter = std::make_unique<RateLimiter>(TRY(RateLimiter::create(config)));
    auto* raw = limiter.get();
    TRY(event_loop.add(raw->timer_fd(), [raw, on_unblocked = std::move(on_unblocked)] {
        raw->on_timer();
        on_unblocked();
    }));
    m_limiters.push_back(Limiter { std::move(limiter), &event_loop });
    return raw;
}

VirtioDevices::~VirtioDevices() {
    for (auto const& entry : m_limiters)
        entry.event_loop->remove(entry.limiter->timer_fd());
    for (auto const& registration : m_ioeventfds)
        (void)m_vm->unregister_ioeventfd(registration.address, 4, registration.queue, registration.event_fd);
}

} // namespace kvmm

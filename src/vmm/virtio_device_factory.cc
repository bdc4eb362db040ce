#include "vmm/virtio_device_factory.h"

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

namespace kvmm {

namespace {

Expected<void> acquire_disk(DiskConfig const& disk, DeviceManager& devices, EventLoop& event_loop) {
    auto context = fmt::format("disk '{}' ({})", disk.id, disk.path);
    auto const format = disk.format == DiskConfig::Format::Qcow2 ? DiskFormat::Qcow2 : DiskFormat::Raw;
    auto image = TRY(DiskImage::open(disk.path, disk.read_only, format).with_context(context));
    virtio::BlockOptions options;
    options.engine = disk.engine == DiskConfig::Engine::IoUring ? DiskEngineKind::IoUring : DiskEngineKind::Sync;
    options.write_through = disk.cache == DiskConfig::CacheMode::WriteThrough;
    options.serial = disk.serial.value_or(disk.id);
    options.record_path = disk.record_path;
    // Unlimited unless configured; always there so that PATCH /drives can set limits.
    options.rate_limiter.emplace(TRY(RateLimiter::create(disk.rate_limit).with_context(context)));
    auto device =
        TRY(virtio::BlockDevice::create(std::move(image), event_loop, std::move(options)).with_context(context));
    spdlog::info("{}: {} sectors, {} engine{}{}", context, device->capacity_sectors(),
                 device->engine_kind() == DiskEngineKind::IoUring ? "io_uring" : "sync",
                 disk.read_only ? ", read-only" : "",
                 disk.record_path ? fmt::format(", recording writes to {}", *disk.record_path) : "");
    return devices.add_virtio(disk.id, DeviceKind::Block, std::move(device));
}

Expected<void> acquire_net(NetConfig const& net, DeviceManager& devices, EventLoop& event_loop) {
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
    return devices.add_virtio(net.id, DeviceKind::Net, std::move(device));
}

Expected<void> acquire_rng(RngConfig const& rng, DeviceManager& devices) {
    virtio::RngDevice::Budget budget;
    // The device exists only after its budget does; the limiter's timer reaches it here.
    auto device_slot = std::make_shared<virtio::RngDevice*>(nullptr);
    if (!rng.rate_limit.empty()) {
        auto* limiter = TRY(devices.add_limiter(rng.rate_limit, [device_slot] {
            if (*device_slot)
                (*device_slot)->process_queue(0); // retry the requests the limit deferred
        }));
        budget = [limiter](uint64_t bytes) { return limiter->consume(bytes); };
    }
    auto device = std::make_unique<virtio::RngDevice>(virtio::RngDevice::EntropySource {}, std::move(budget));
    *device_slot = device.get();
    return devices.add_virtio("rng", DeviceKind::Rng, std::move(device));
}

Expected<void> acquire_balloon(BalloonConfig const& balloon, DeviceManager& devices, EventLoop& event_loop) {
    virtio::BalloonOptions options;
    options.target_mib = balloon.target_mib;
    options.deflate_on_oom = balloon.deflate_on_oom;
    options.free_page_reporting = balloon.free_page_reporting;
    options.stats_interval = std::chrono::seconds(balloon.stats_polling_interval_s);
    auto device = TRY(virtio::BalloonDevice::create(event_loop, options).with_context("balloon"));
    return devices.add_virtio("balloon", DeviceKind::Balloon, std::move(device));
}

} // namespace

Expected<void> acquire_virtio_devices(VmConfig const& config, DeviceManager& devices, EventLoop& event_loop,
                                      std::shared_ptr<ByteSink> console_output) {
    for (auto const& disk : config.disks)
        TRY(acquire_disk(disk, devices, event_loop));
    for (auto const& net : config.nets)
        TRY(acquire_net(net, devices, event_loop));
    if (config.rng)
        TRY(acquire_rng(*config.rng, devices));
    if (config.virtio_console)
        TRY(devices.add_virtio("console", DeviceKind::Console,
                               std::make_unique<virtio::ConsoleDevice>(std::move(console_output))));
    if (config.vsock) {
        auto device =
            TRY(virtio::vsock::VsockDevice::create(event_loop, config.vsock->guest_cid, config.vsock->uds_path)
                    .with_context("vsock"));
        TRY(devices.add_virtio("vsock", DeviceKind::Vsock, std::move(device)));
    }
    if (config.balloon)
        TRY(acquire_balloon(*config.balloon, devices, event_loop));
    return {};
}

} // namespace kvmm

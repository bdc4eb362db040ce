// VirtioDevice: what a virtio device type (block, net, entropy, ...) provides
// to a transport, independent of how the guest reaches it (virtio 1.2 section
// 2 "Basic Facilities of a Virtio Device").
//
// Threading contract (DESIGN.md: one event-loop thread does all device work):
//   - features(), queue_max_sizes(), type() are constant after construction;
//   - read_config()/write_config() run on vCPU threads, possibly concurrently with
//     the event loop: a device guards whatever config state both sides touch;
//   - activate(), process_queue(), reset() and every backend callback the device
//     registers run on the event-loop thread, never on a vCPU thread, so a
//     device may do host I/O there without stalling a vCPU.
#pragma once

#include "base/error.h"
#include "base/expected.h"
#include "base/state_io.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_interrupt.h"
#include "devices/virtio/virtio_spec.h"
#include "memory/guest_memory.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace kvmm::virtio {

// What a device gets when the driver sets DRIVER_OK: the negotiated features, its queues
// (validated; a queue the driver did not make ready is absent: std::nullopt), guest memory,
// its interrupt, and `fail`, which puts the device into DEVICE_NEEDS_RESET (2.1.2) and logs
// the reason once. After fail() the transport stops calling process_queue() until reset.
struct ActivationContext {
    uint64_t features { 0 };
    std::vector<std::optional<Queue>> queues;
    GuestMemory const* memory { nullptr };
    VirtioInterrupt* interrupt { nullptr };
    std::function<void(Error const&)> fail;
    // Asks for process_queue(queue_index) again on a later round of the event loop, after
    // whatever else is ready there (signals, API work, other devices). A device calls it when
    // it stops at its per-wake-up budget (work_budget.h) with work left; calling it again
    // before that round is harmless. Event-loop thread.
    std::function<void(size_t queue_index)> reschedule;
};

class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;

    virtual DeviceType type() const = 0;
    // Feature bits offered to the driver; the transport adds VIRTIO_F_VERSION_1.
    virtual uint64_t features() const = 0;
    // One entry per virtqueue: its maximum size (QueueNumMax).
    virtual std::span<uint16_t const> queue_max_sizes() const = 0;

    // Device-specific configuration space (offset 0x100 on MMIO). Out-of-range reads give zeros.
    virtual void read_config(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write_config(uint64_t offset, std::span<uint8_t const> data) {
        (void)offset;
        (void)data;
    }
    // Changes when the device changes its configuration space (4.2.2 ConfigGeneration).
    virtual uint32_t config_generation() const { return 0; }

    // DRIVER_OK: start serving the queues. An Error puts the device into DEVICE_NEEDS_RESET.
    virtual Expected<void> activate(ActivationContext context) = 0;
    // The driver notified queue `index` (or the transport re-polls it after activation).
    virtual void process_queue(size_t index) = 0;
    // Named event counters for metrics (packets, bytes, errors...). Event-loop thread.
    struct Counter {
        std::string_view name;
        uint64_t value;
    };
    virtual std::vector<Counter> counters() const { return {}; }

    // Status 0 written (or the VM stops): drop the queues and forget the driver's state. After
    // it returns the device writes no more guest memory for the old queues.
    virtual void reset() = 0;

    // Saved state (docs/ARCHITECTURE.md "Saved state"). save_state() writes the device's own
    // section: what it owns beyond the transport's registers (its configuration space, progress,
    // its queues' QueueState when active). It is called only while the VM is paused; a device
    // that cannot be saved now (e.g. requests still in flight on the host) returns an Error
    // saying why. restore_state() reads that section into a device constructed with the same
    // configuration; `context` is present when the saved device was active and had not failed:
    // its queues are freshly created from the restored registers, and the device restores their
    // QueueState and takes the context as activate() would, without processing anything yet (the
    // transport polls every queue once afterwards, on the event loop). A device that failed
    // (it called fail() and dropped its context) or was never activated writes a section that
    // reads back without a context. A refused restore leaves the device as it was.
    // Default: this device cannot be saved.
    virtual Expected<void> save_state(StateWriter& writer) const {
        (void)writer;
        return Error::format("virtio device type {}: saving its state is not supported", static_cast<uint32_t>(type()));
    }
    virtual Expected<void> restore_state(StateReader& reader, std::optional<ActivationContext> context) {
        (void)reader;
        (void)context;
        return Error::format("virtio device type {}: restoring its state is not supported",
                             static_cast<uint32_t>(type()));
    }
};

} // namespace kvmm::virtio

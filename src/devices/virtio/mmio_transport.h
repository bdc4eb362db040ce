// MmioTransport: the virtio-mmio transport, version 2 (virtio 1.2 section 4.2),
// modern devices only (VIRTIO_F_VERSION_1 is always offered and required).
//
// It owns a device's registers and enforces the status state machine (2.1,
// 3.1.1): features are fixed at FEATURES_OK (a set the device did not offer, or
// one without VERSION_1, is refused by leaving FEATURES_OK clear); queue
// registers are frozen once a queue is ready or DRIVER_OK is set; DRIVER_OK
// validates every ready queue and hands them to the device; writing 0 resets.
// A driver that breaks these rules gets the write ignored, or the device put
// into DEVICE_NEEDS_RESET, and one rate-limited log line - never a crash.
//
// Threading: read()/write() run on vCPU threads and take m_lock for the
// registers. Device work (activate, queue processing, reset) runs on the event
// loop's thread: the transport posts commands to it through an eventfd and
// every queue has a notify eventfd (which the VMM also registers as a KVM
// ioeventfd, so a notification normally never leaves the kernel). Commands run
// in the order they were posted, so a reset is never overtaken by the next
// activation. The transport must be destroyed on the event loop's thread
// after the vCPUs have stopped.
//
// Saved state (docs/ARCHITECTURE.md "Saved state"): save_state() writes the
// transport's section (MmioTransportState: the registers, the interrupt status
// and whether the device is active or failed) followed by the device's own
// section; restore_state() reads both back into a transport built for the same
// device configuration. Both run on the event loop's thread while the vCPUs
// are stopped.
#pragma once

#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/expected.h"
#include "base/rate_limited_log.h"
#include "base/thread_annotations.h"
#include "devices/bus/bus_device.h"
#include "devices/virtio/virtio_device.h"
#include "devices/virtio/virtio_interrupt.h"

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kvmm::virtio {

// What a virtio-mmio transport holds beyond its device: the driver-visible registers, the
// interrupt status and the activation state. The device's configuration space and queue
// progress are the device's own section. The transport does not track a configuration
// generation (the device reports its own), so there is none here.
struct MmioTransportState {
    static constexpr std::string_view SECTION = "virtio-mmio";
    static constexpr uint32_t VERSION = 1;
    // More queues than any virtio device type has; bounds what decode() allocates.
    static constexpr uint64_t MAX_QUEUES = 64;

    struct QueueRegisters {
        uint16_t max_size { 0 }; // QueueNumMax: fixed by the device, saved to detect another device
        uint16_t size { 0 };
        bool ready { false };
        uint64_t descriptor_table { 0 };
        uint64_t available_ring { 0 };
        uint64_t used_ring { 0 };

        bool operator==(QueueRegisters const&) const = default;
    };

    uint32_t device_type { 0 };
    uint32_t status { 0 };
    uint32_t device_features_select { 0 };
    uint32_t driver_features_select { 0 };
    uint64_t driver_features { 0 };
    uint32_t queue_select { 0 };
    std::vector<QueueRegisters> queues;
    uint32_t interrupt_status { 0 };
    // The device was activated (DRIVER_OK ran) and not reset since.
    bool active { false };
    // The device or its activation failed: DEVICE_NEEDS_RESET, no queue work until a reset.
    bool failed { false };

    bool operator==(MmioTransportState const&) const = default;
    void encode(StateWriter& writer) const;
    // Reads the section; values are checked against a transport by MmioTransport::restore_state.
    static Expected<MmioTransportState> decode(StateReader& reader);
};

class MmioTransport final : public BusDevice {
public:
    // Register offsets (4.2.2) the VMM needs to know about.
    static constexpr uint64_t QUEUE_NOTIFY_OFFSET = 0x050;
    static constexpr uint64_t CONFIG_OFFSET = 0x100;
    // The window each device occupies on the MMIO bus (registers + up to 3.75 KiB of config).
    static constexpr uint64_t WINDOW_SIZE = 0x1000;

    static Expected<std::unique_ptr<MmioTransport>> create(std::string name, std::unique_ptr<VirtioDevice> device,
                                                           GuestMemory const& memory, InterruptLine& line,
                                                           EventLoop& event_loop);
    ~MmioTransport() override;
    MmioTransport(MmioTransport const&) = delete;
    MmioTransport& operator=(MmioTransport const&) = delete;

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    // One notification eventfd per queue, fixed at creation (m_queue_registers needs m_lock).
    size_t queue_count() const { return m_notify.size(); }
    // The eventfd a notification of queue `index` signals (for KVM_IOEVENTFD with datamatch index).
    int queue_notify_fd(size_t index) const { return m_notify[index].fd(); }
    std::string const& name() const { return m_name; }
    VirtioDevice& device() { return *m_device; }
    uint32_t status() const;
    // Commands (resets, activations) that a later reset made unnecessary before they ran.
    uint64_t commands_coalesced() const;
    // Resets and activations the driver asked for (posted to the event loop).
    uint64_t commands_posted() const;
    // Activations the device has been given (DRIVER_OK after each reset; a restored active
    // device is not counted). Event-loop thread.
    uint64_t activations() const { return m_activations; }
    size_t pending_commands() const;

    // Saved state; event-loop thread, vCPUs stopped.
    //
    // save_state() refuses while a reset or an activation the driver asked for is still
    // queued (pending_commands() > 0): the command is part of what the guest has done, and
    // saving the registers without it would restore a device that never sees it. Running it
    // from here would make saving change the device, so the caller settles first: once the
    // vCPUs are stopped no new command can be posted, and run_pending_commands() runs the rest.
    // It then writes MmioTransportState and the device's section (VirtioDevice::save_state);
    // after an Error the writer holds a partial payload and is to be discarded.
    Expected<void> save_state(StateWriter& writer) const;
    // Checks the saved registers against this transport (device type, queue count and
    // maximum sizes, features this device offers, a status the state machine can reach,
    // interrupt bits), re-creates the ready queues of an active device from them and hands
    // the device its section with the same ActivationContext that DRIVER_OK builds. Refused,
    // with the field named and nothing changed, on any mismatch, or when this transport's
    // device is active or has commands queued (restore into a transport just created or reset).
    Expected<void> restore_state(StateReader& reader);
    // The transport's part alone (what save_state() writes first).
    MmioTransportState save() const;
    // Runs the queued resets and activations now instead of on the loop's next round.
    // Event-loop thread.
    void run_pending_commands() { run_commands(); }

private:
    using QueueRegisters = MmioTransportState::QueueRegisters;
    struct Command {
        enum class Kind { Activate, Reset } kind;
        ActivationContext context;
        uint64_t epoch; // m_epoch when posted
    };

    MmioTransport(std::string name, std::unique_ptr<VirtioDevice> device, GuestMemory const& memory,
                  InterruptLine& line, EventLoop& event_loop, EventFd control, std::vector<EventFd> notify);

    uint32_t read_register(uint64_t offset);
    void write_register(uint64_t offset, uint32_t value);
    void write_status(uint32_t value) REQUIRES(m_lock);
    // What the device gets at DRIVER_OK (write_status) or on restore: the queues re-created
    // from `queues` (an Error names the first one Queue::create refuses), and fail/reschedule
    // bound to `epoch`. Reads only its arguments and members that never change.
    Expected<ActivationContext> make_activation_context(std::span<QueueRegisters const> queues, uint64_t features,
                                                        uint64_t epoch);
    // Reads m_queue_registers without m_lock: only the queue count and each queue's max_size,
    // which nothing changes (restore, the only writer besides the constructor, runs on this same
    // event-loop thread and writes back the values checked here).
    Expected<void> check_state(MmioTransportState const& state) const NO_THREAD_SAFETY_ANALYSIS;
    void reset_registers() REQUIRES(m_lock);
    void post(Command command) REQUIRES(m_lock);
    void guest_error(std::string const& message);

    // Event-loop thread.
    void run_commands();
    void on_notify(size_t index);
    void fail(uint64_t epoch, Error const& error);

    std::string m_name;
    std::unique_ptr<VirtioDevice> m_device;
    GuestMemory const& m_memory;
    VirtioInterrupt m_interrupt;
    EventLoop& m_event_loop;
    EventFd m_control;
    std::vector<EventFd> m_notify;
    uint64_t m_offered_features;

    mutable Mutex m_lock; // guards everything below up to the event-loop-only section
    uint32_t m_status GUARDED_BY(m_lock) { 0 };
    uint32_t m_device_features_select GUARDED_BY(m_lock) { 0 };
    uint32_t m_driver_features_select GUARDED_BY(m_lock) { 0 };
    uint64_t m_driver_features GUARDED_BY(m_lock) { 0 };
    uint32_t m_queue_select GUARDED_BY(m_lock) { 0 };
    std::vector<QueueRegisters> m_queue_registers GUARDED_BY(m_lock);
    std::deque<Command> m_commands GUARDED_BY(m_lock); // at most two: see post()
    uint64_t m_commands_coalesced GUARDED_BY(m_lock) { 0 };
    uint64_t m_commands_posted GUARDED_BY(m_lock) { 0 };
    uint64_t m_epoch GUARDED_BY(m_lock) { 0 }; // bumped at every reset; stale fail() calls are ignored

    RateLimitedLog m_guest_log; // thread-safe; may be used with m_lock held

    // Event-loop thread only.
    bool m_active { false };
    bool m_failed { false };
    uint64_t m_activations { 0 };
};

} // namespace kvmm::virtio

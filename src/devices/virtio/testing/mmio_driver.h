// Test support: a guest driver's view of a virtio-mmio device - the
// initialization sequence of virtio 1.2 section 3.1.1 done through the
// transport's registers, queue notification, and interrupt acknowledgement.
#pragma once

#include "base/event_loop.h"
#include "devices/virtio/mmio_transport.h"
#include "devices/virtio/testing/driver_queue.h"

#include <span>
#include <vector>

namespace kvmm::virtio::testing {

// Restores `transport` (and its device) from `payload`, which must hold exactly their sections:
// what a machine's restore does for one device.
Expected<void> restore_transport(MmioTransport& transport, std::span<std::byte const> payload);

class MmioDriver {
public:
    MmioDriver(MmioTransport& transport, EventLoop& event_loop) : m_transport(transport), m_event_loop(event_loop) {}

    uint32_t read32(uint64_t offset);
    void write32(uint64_t offset, uint32_t value);

    // Resets, negotiates `features` (VERSION_1 is added), sets up `queues` (index i -> queues[i];
    // nullptr leaves a queue unused) and sets DRIVER_OK; then lets the event loop activate the
    // device. Returns the final status register.
    uint32_t initialize(uint64_t features, std::vector<DriverQueue*> const& queues);
    uint64_t device_features();

    void notify(uint16_t queue);
    // Runs the event loop until it is idle (nothing ready within `timeout_ms` each round).
    void run_event_loop(int timeout_ms = 0);

private:
    MmioTransport& m_transport;
    EventLoop& m_event_loop;
};

} // namespace kvmm::virtio::testing

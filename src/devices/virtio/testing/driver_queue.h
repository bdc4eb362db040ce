// Test support: the driver's side of a split virtqueue, laid out in a
// GuestMemory the way a guest driver would (virtio 1.2 section 2.7), so device
// models are exercised without a guest. It can also write the malformed shapes
// a hostile driver might (loops, bad indexes, huge lengths) for the bug-shape
// tests and the fuzzers.
//
// Layout from `base`: descriptor table, available ring, then the used ring on
// the next page, then a data area handed out by allocate().
#pragma once

#include "devices/virtio/queue.h"
#include "memory/guest_memory.h"

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace kvmm::virtio::testing {

struct DriverBuffer {
    GuestAddress address;
    uint32_t length;
    bool writable;
};

class DriverQueue {
public:
    DriverQueue(GuestMemory const& memory, GuestAddress base, uint16_t size);

    QueueConfig config() const { return m_config; }
    uint16_t size() const { return m_config.size; }

    // Reserves `length` bytes (16-byte aligned) in the data area.
    GuestAddress allocate(uint64_t length);
    // Allocates a buffer and fills it (readable) or zeroes it (writable).
    DriverBuffer buffer(std::span<std::byte const> contents);
    DriverBuffer writable_buffer(uint32_t length);

    // Writes `buffers` as a chain of free descriptors and offers its head; returns the head.
    uint16_t add_chain(std::vector<DriverBuffer> const& buffers);
    // The same chain through one indirect descriptor whose table is allocated in the data area.
    uint16_t add_indirect_chain(std::vector<DriverBuffer> const& buffers);

    // Raw access for malformed shapes.
    void write_descriptor(uint16_t index, Descriptor const& descriptor);
    void offer(uint16_t head); // puts head in the next available slot and bumps the index
    void set_available_index(uint16_t index);
    uint16_t available_index() const { return m_available_index; }
    void set_available_flags(uint16_t flags);
    void set_used_event(uint16_t value);
    uint16_t available_event() const; // written by the device with EVENT_IDX

    // The next used element the device returned, if any.
    std::optional<UsedElement> pop_used();
    uint16_t used_index() const;

    // Reads a device-written buffer.
    std::vector<std::byte> read(GuestAddress address, uint32_t length) const;

private:
    GuestMemory const& m_memory;
    QueueConfig m_config;
    uint16_t m_next_descriptor { 0 };
    uint16_t m_available_index { 0 };
    uint16_t m_last_used { 0 };
    uint64_t m_data_next;
    uint64_t m_data_end;
};

} // namespace kvmm::virtio::testing

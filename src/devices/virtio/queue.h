// Queue: the device side of one split virtqueue (virtio 1.2 section 2.7), with
// indirect descriptors (2.7.5.3) and used/available event suppression
// (VIRTIO_F_EVENT_IDX, 2.7.7 and 2.7.10).
//
// The driver owns the rings and may change them at any time, so every value
// read from guest memory is copied before it is checked, and every check a
// device relies on happens once, here, when a chain is popped:
//   - the head and every `next` index are inside the table;
//   - a chain visits at most `size` descriptors (2.7.5.3.1: a chain is never
//     longer than the queue), which also stops loops;
//   - indirect tables only where negotiated, not nested, not combined with
//     NEXT, a multiple of 16 bytes, at most `size` entries, inside guest RAM;
//   - device-readable descriptors come before device-writable ones (2.7.4.2);
//   - every buffer lies inside guest RAM; total lengths are summed in 64 bits;
//   - the available index never runs more than `size` ahead of the device, and
//     a head is not offered again while the device still holds it.
// Any violation is an Error; the device then stops using the queue and asks
// for a reset (DEVICE_NEEDS_RESET). Nothing here allocates more than O(size).
//
// Threading: one thread at a time (the device's event-loop thread).
// Ordering: the available index is read before the ring entries it covers
// (acquire fence); a used element is written before the used index (release
// fence); the used index is written before the driver's used_event is read
// (full fence), as 2.7.7.2 requires.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "devices/virtio/virtio_spec.h"
#include "memory/guest_memory.h"

#include <cstdint>
#include <span>
#include <vector>

namespace kvmm::virtio {

// Where the driver put a queue's three parts, and how big it is (4.2.2 QueueNum, QueueDesc...).
struct QueueConfig {
    uint16_t size { 0 };
    GuestAddress descriptor_table { 0 };
    GuestAddress available_ring { 0 };
    GuestAddress used_ring { 0 };
};

struct ChainSegment {
    GuestAddress address;
    uint32_t length {};
};

// One validated descriptor chain: readable segments first, then writable ones.
class DescriptorChain {
public:
    uint16_t head() const { return m_head; }
    std::span<ChainSegment const> readable() const { return std::span(m_segments).first(m_first_writable); }
    std::span<ChainSegment const> writable() const { return std::span(m_segments).subspan(m_first_writable); }
    uint64_t readable_length() const { return m_readable_length; }
    uint64_t writable_length() const { return m_writable_length; }

    // Copies readable bytes starting `offset` bytes into the readable part; returns how many
    // were copied (less than destination.size() when the chain is shorter).
    Expected<size_t> read(GuestMemory const& memory, uint64_t offset, std::span<std::byte> destination) const;
    // Copies into the writable part starting `offset` bytes into it; returns how many fit.
    Expected<size_t> write(GuestMemory const& memory, uint64_t offset, std::span<std::byte const> source) const;

private:
    friend class Queue;
    void clear();

    uint16_t m_head { 0 };
    std::vector<ChainSegment> m_segments;
    size_t m_first_writable { 0 };
    uint64_t m_readable_length { 0 };
    uint64_t m_writable_length { 0 };
};

// A queue's progress, the part of its state that is not in guest memory or in the transport's
// registers (size, addresses, features): what save() returns and restore() takes.
struct QueueState {
    static constexpr std::string_view SECTION = "virtqueue";
    static constexpr uint32_t VERSION = 1;

    uint16_t next_available { 0 };
    uint16_t next_used { 0 };
    uint16_t signalled_used { 0 };
    bool signalled_valid { false };
    // Heads popped and not yet returned (in order), e.g. receive buffers a device holds.
    std::vector<uint16_t> in_flight_heads;

    bool operator==(QueueState const&) const = default;
    void encode(StateWriter& writer) const;
    // `queue_size` bounds the list of heads (each must be below it).
    static Expected<QueueState> decode(StateReader& reader, uint16_t queue_size);
};

class Queue {
public:
    // Checks the layout the driver chose: size a power of two up to 32768 (2.7), alignment of
    // the three parts (2.7: 16, 2 and 4 bytes) and that each part lies in guest RAM.
    // `features` are the negotiated ones (indirect descriptors, event index).
    static Expected<Queue> create(GuestMemory const& memory, QueueConfig const& config, uint64_t features);

    // Pops the next available chain into `chain` (reusing its storage). Returns false when the
    // driver has offered nothing new; an Error when the ring or the chain is malformed.
    Expected<bool> pop(DescriptorChain& chain);
    // Gives the last popped chain back to the available side (e.g. a receive buffer that
    // cannot be filled yet); the next pop() returns it again.
    void undo_pop(DescriptorChain const& chain);
    // Walks again, with pop()'s checks, the chain of a head the device holds (popped, not yet
    // returned): how a restored device takes back a chain it was in the middle of when saved.
    Expected<void> held_chain(uint16_t head, DescriptorChain& chain) const;
    // Returns a chain to the driver with `written` bytes placed in its writable part.
    Expected<void> add_used(uint16_t head, uint32_t written);
    // Whether the driver asked for an interrupt for the used buffers added since the last
    // call (used_event with EVENT_IDX, else the NO_INTERRUPT flag).
    Expected<bool> should_interrupt();
    // With EVENT_IDX: tells the driver to notify for any buffer after the ones seen so far,
    // then returns whether more arrived in the meantime (the caller then pops again), so a
    // notification is never lost. Without EVENT_IDX: returns whether buffers are available.
    Expected<bool> enable_notifications();
    // What every drain loop needs: pops the next available chain into `chain`, or, when the
    // driver has offered nothing new, enables notifications (EVENT_IDX: avail_event, 2.7.10)
    // and looks at the ring once more, so that a buffer the driver posted between the empty
    // check and the enabling is popped now instead of waiting for a notification the driver
    // will not send. False: nothing is available and the driver will notify for the next
    // buffer. One re-check only, so a driver that moves its index back and forth cannot keep
    // the device here; an index that moves back is not a buffer, and the next one notifies.
    Expected<bool> pop_or_enable_notifications(DescriptorChain& chain);

    // Saved state; the queue itself is re-created from the transport's registers (create()).
    QueueState save() const;
    // Puts a freshly created queue back where save() left it. Refused, naming the value, when
    // a head is out of range or listed twice, or the used index runs ahead of the available one
    // by more than the queue size.
    Expected<void> restore(QueueState const& state);

    uint16_t size() const { return m_config.size; }
    // Chains popped and not yet returned through add_used().
    uint32_t in_flight() const { return m_in_flight_count; }
    uint64_t features() const { return m_features; }

private:
    Queue(GuestMemory const& memory, QueueConfig const& config, uint64_t features);

    Expected<uint16_t> read_available_index() const;
    Expected<void> walk_chain(uint16_t head, DescriptorChain& chain) const;
    Expected<void> add_segment(Descriptor const& descriptor, DescriptorChain& chain) const;

    GuestMemory const* m_memory;
    QueueConfig m_config;
    uint64_t m_features;
    bool m_event_index;
    uint16_t m_next_available { 0 };
    uint16_t m_next_used { 0 };
    uint16_t m_signalled_used { 0 };
    bool m_signalled_valid { false };
    std::vector<bool> m_head_in_flight;
    uint32_t m_in_flight_count { 0 };
};

} // namespace kvmm::virtio

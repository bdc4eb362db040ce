#include "devices/virtio/queue.h"

#include "base/checked_math.h"

#include <algorithm>
#include <atomic>
#include <bit>

namespace kvmm::virtio {

namespace {

// Byte offsets inside the rings (2.7.6 and 2.7.8).
constexpr uint64_t RING_HEADER = 4;                                                    // flags + idx
uint64_t available_ring_bytes(uint16_t size) { return RING_HEADER + 2ull * size + 2; } // + used_event
uint64_t used_ring_bytes(uint16_t size) { return RING_HEADER + 8ull * size + 2; }      // + avail_event

} // namespace

void DescriptorChain::clear() {
    m_head = 0;
    m_segments.clear();
    m_first_writable = 0;
    m_readable_length = 0;
    m_writable_length = 0;
}

namespace {

// Walks `segments` as one byte stream, copying `length` bytes starting at `offset`.
template <typename Copy>
Expected<size_t> copy_segments(std::span<ChainSegment const> segments, uint64_t offset, size_t length, Copy&& copy) {
    size_t done = 0;
    for (auto const& segment : segments) {
        if (done == length)
            break;
        if (offset >= segment.length) {
            offset -= segment.length;
            continue;
        }
        size_t const piece = static_cast<size_t>(std::min<uint64_t>(segment.length - offset, length - done));
        TRY(copy(segment.address.offset(offset), done, piece));
        done += piece;
        offset = 0;
    }
    return done;
}

} // namespace

Expected<size_t> DescriptorChain::read(GuestMemory const& memory, uint64_t offset,
                                       std::span<std::byte> destination) const {
    return copy_segments(readable(), offset, destination.size(), [&](GuestAddress address, size_t done, size_t piece) {
        return memory.read(address, destination.subspan(done, piece));
    });
}

Expected<size_t> DescriptorChain::write(GuestMemory const& memory, uint64_t offset,
                                        std::span<std::byte const> source) const {
    return copy_segments(writable(), offset, source.size(), [&](GuestAddress address, size_t done, size_t piece) {
        return memory.write(address, source.subspan(done, piece));
    });
}

Queue::Queue(GuestMemory const& memory, QueueConfig const& config, uint64_t features)
    : m_memory(&memory), m_config(config), m_features(features),
      m_event_index(has_feature(features, FEATURE_RING_EVENT_IDX)), m_head_in_flight(config.size, false) {}

Expected<Queue> Queue::create(GuestMemory const& memory, QueueConfig const& config, uint64_t features) {
    if (config.size == 0 || config.size > MAX_QUEUE_SIZE || !std::has_single_bit(config.size))
        return Error::format("queue size {} is not a power of two between 1 and {}", config.size, MAX_QUEUE_SIZE);
    struct Part {
        char const* name {};
        GuestAddress address;
        uint64_t alignment {};
        uint64_t length {};
    };
    Part const parts[] = {
        { "descriptor table", config.descriptor_table, 16, 16ull * config.size },
        { "available ring", config.available_ring, 2, available_ring_bytes(config.size) },
        { "used ring", config.used_ring, 4, used_ring_bytes(config.size) },
    };
    for (auto const& part : parts) {
        if (part.address.value() % part.alignment != 0)
            return Error::format("{} at {:#x} is not {}-byte aligned", part.name, part.address.value(), part.alignment);
        if (!memory.contains_range(part.address, part.length))
            return Error::format("{} at {:#x} ({} bytes for {} entries) is outside guest RAM", part.name,
                                 part.address.value(), part.length, config.size);
    }
    return Queue(memory, config, features);
}

Expected<uint16_t> Queue::read_available_index() const {
    auto const index = TRY(m_memory->read_obj<uint16_t>(m_config.available_ring.offset(2)));
    // The ring entries below this index must be read after it (2.7.13.3 pairs with the driver's
    // write barrier before it publishes idx).
    std::atomic_thread_fence(std::memory_order_acquire);
    return index;
}

Expected<bool> Queue::pop(DescriptorChain& chain) {
    chain.clear();
    uint16_t const available = TRY(read_available_index());
    auto const pending = static_cast<uint16_t>(available - m_next_available);
    if (pending == 0)
        return false;
    if (pending > m_config.size)
        return Error::format("available index {} is {} entries ahead of the device's {} in a queue of {}", available,
                             pending, m_next_available, m_config.size);
    uint64_t const slot = m_next_available % m_config.size;
    uint16_t const head = TRY(m_memory->read_obj<uint16_t>(m_config.available_ring.offset(RING_HEADER + 2 * slot)));
    if (head >= m_config.size)
        return Error::format("available ring entry {} names descriptor {}, outside the table of {}", slot, head,
                             m_config.size);
    if (m_head_in_flight[head])
        return Error::format("descriptor {} offered again while the device still holds it", head);
    TRY(walk_chain(head, chain));
    m_head_in_flight[head] = true;
    ++m_in_flight_count;
    ++m_next_available;
    return true;
}

void Queue::undo_pop(DescriptorChain const& chain) {
    if (!m_head_in_flight[chain.head()])
        return;
    m_head_in_flight[chain.head()] = false;
    --m_in_flight_count;
    --m_next_available;
}

Expected<void> Queue::held_chain(uint16_t head, DescriptorChain& chain) const {
    chain.clear();
    if (head >= m_config.size || !m_head_in_flight[head])
        return Error::format("descriptor {} is not a chain the device holds", head);
    return walk_chain(head, chain);
}

Expected<void> Queue::add_segment(Descriptor const& descriptor, DescriptorChain& chain) const {
    GuestAddress const address(descriptor.address);
    if (!m_memory->contains_range(address, descriptor.length))
        return Error::format("buffer of {} bytes at {:#x} is outside guest RAM", descriptor.length, descriptor.address);
    bool const writable = (descriptor.flags & DESCRIPTOR_F_WRITE) != 0;
    if (writable) {
        chain.m_writable_length += descriptor.length;
    } else {
        if (chain.m_writable_length != 0 || chain.m_first_writable != chain.m_segments.size())
            return Error::format("device-readable buffer at {:#x} follows a device-writable one", descriptor.address);
        chain.m_readable_length += descriptor.length;
        ++chain.m_first_writable;
    }
    chain.m_segments.push_back(ChainSegment { address, descriptor.length });
    return {};
}

Expected<void> Queue::walk_chain(uint16_t head, DescriptorChain& chain) const {
    chain.m_head = head;
    bool const indirect_allowed = has_feature(m_features, FEATURE_RING_INDIRECT_DESC);
    uint32_t visited = 0;
    uint16_t index = head;
    while (true) {
        if (++visited > m_config.size)
            return Error::format("descriptor chain from head {} is longer than the queue size {} (a loop?)", head,
                                 m_config.size);
        auto const descriptor = TRY(m_memory->read_obj<Descriptor>(m_config.descriptor_table.offset(16ull * index)));
        if (descriptor.flags & DESCRIPTOR_F_INDIRECT) {
            if (!indirect_allowed)
                return Error::format("descriptor {} is indirect, but VIRTIO_F_INDIRECT_DESC was not negotiated", index);
            if (descriptor.flags & DESCRIPTOR_F_NEXT)
                return Error::format("indirect descriptor {} also has the NEXT flag (2.7.5.3.1)", index);
            if (descriptor.length == 0 || descriptor.length % sizeof(Descriptor) != 0)
                return Error::format("indirect table length {} of descriptor {} is not a non-zero multiple of 16",
                                     descriptor.length, index);
            uint32_t const entries = descriptor.length / sizeof(Descriptor);
            if (entries > m_config.size)
                return Error::format("indirect table of {} entries exceeds the queue size {}", entries, m_config.size);
            GuestAddress const table(descriptor.address);
            if (!m_memory->contains_range(table, descriptor.length))
                return Error::format("indirect table of {} bytes at {:#x} is outside guest RAM", descriptor.length,
                                     descriptor.address);
            uint32_t inner_visited = 0;
            uint32_t inner = 0;
            while (true) {
                if (++inner_visited > entries)
                    return Error::format("indirect chain at {:#x} is longer than its {} entries (a loop?)",
                                         descriptor.address, entries);
                auto const entry = TRY(m_memory->read_obj<Descriptor>(table.offset(16ull * inner)));
                if (entry.flags & DESCRIPTOR_F_INDIRECT)
                    return Error::format("indirect table at {:#x} holds another indirect descriptor",
                                         descriptor.address);
                TRY(add_segment(entry, chain));
                if (!(entry.flags & DESCRIPTOR_F_NEXT))
                    break;
                if (entry.next >= entries)
                    return Error::format("indirect descriptor {} links to {}, outside its table of {}", inner,
                                         entry.next, entries);
                inner = entry.next;
            }
            // 2.7.5.3.1: the indirect descriptor is the only one in its chain position and has no NEXT.
            return {};
        }
        TRY(add_segment(descriptor, chain));
        if (!(descriptor.flags & DESCRIPTOR_F_NEXT))
            return {};
        if (descriptor.next >= m_config.size)
            return Error::format("descriptor {} links to {}, outside the table of {}", index, descriptor.next,
                                 m_config.size);
        index = descriptor.next;
    }
}

Expected<void> Queue::add_used(uint16_t head, uint32_t written) {
    if (head >= m_config.size || !m_head_in_flight[head])
        return Error::format("device returned descriptor {} which it does not hold", head);
    uint64_t const slot = m_next_used % m_config.size;
    TRY(m_memory->write_obj(m_config.used_ring.offset(RING_HEADER + 8 * slot), UsedElement { head, written }));
    // The element must be visible before the index that publishes it (2.7.8).
    std::atomic_thread_fence(std::memory_order_release);
    ++m_next_used;
    TRY(m_memory->write_obj(m_config.used_ring.offset(2), m_next_used));
    m_head_in_flight[head] = false;
    --m_in_flight_count;
    return {};
}

Expected<bool> Queue::should_interrupt() {
    // The used index store must be ordered before reading the driver's suppression state.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    uint16_t const previous = m_signalled_used;
    bool const previous_valid = m_signalled_valid;
    m_signalled_used = m_next_used;
    m_signalled_valid = true;
    if (previous_valid && previous == m_next_used)
        return false;
    if (m_event_index) {
        uint16_t const used_event =
            TRY(m_memory->read_obj<uint16_t>(m_config.available_ring.offset(RING_HEADER + 2ull * m_config.size)));
        if (!previous_valid)
            return true;
        // 2.7.7.2: interrupt when used_event lies in (previous, m_next_used].
        return static_cast<uint16_t>(m_next_used - used_event - 1) < static_cast<uint16_t>(m_next_used - previous);
    }
    uint16_t const flags = TRY(m_memory->read_obj<uint16_t>(m_config.available_ring));
    return (flags & AVAIL_F_NO_INTERRUPT) == 0;
}

Expected<bool> Queue::enable_notifications() {
    if (m_event_index) {
        TRY(m_memory->write_obj(m_config.used_ring.offset(RING_HEADER + 8ull * m_config.size), m_next_available));
        // Publish avail_event before re-reading idx, or a buffer added in between is missed.
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    uint16_t const available = TRY(read_available_index());
    return available != m_next_available;
}

Expected<bool> Queue::pop_or_enable_notifications(DescriptorChain& chain) {
    if (TRY(pop(chain)))
        return true;
    if (!TRY(enable_notifications()))
        return false;
    return pop(chain);
}

} // namespace kvmm::virtio

namespace kvmm::virtio {

void QueueState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u16(next_available);
    writer.u16(next_used);
    writer.u16(signalled_used);
    writer.boolean(signalled_valid);
    writer.u64(in_flight_heads.size());
    for (uint16_t head : in_flight_heads)
        writer.u16(head);
    writer.end_section();
}

Expected<QueueState> QueueState::decode(StateReader& reader, uint16_t queue_size) {
    TRY(reader.begin_section(SECTION, VERSION));
    QueueState state;
    state.next_available = TRY(reader.u16("next_available"));
    state.next_used = TRY(reader.u16("next_used"));
    state.signalled_used = TRY(reader.u16("signalled_used"));
    state.signalled_valid = TRY(reader.boolean("signalled_valid"));
    auto const count = TRY(reader.u64_in_range("in_flight_heads", 0, queue_size));
    state.in_flight_heads.reserve(static_cast<size_t>(count));
    for (uint64_t i = 0; i < count; ++i)
        state.in_flight_heads.push_back(TRY(reader.u16("in_flight_head")));
    TRY(reader.end_section());
    return state;
}

QueueState Queue::save() const {
    QueueState state { m_next_available, m_next_used, m_signalled_used, m_signalled_valid, {} };
    for (size_t head = 0; head < m_head_in_flight.size(); ++head)
        if (m_head_in_flight[head])
            state.in_flight_heads.push_back(static_cast<uint16_t>(head));
    return state;
}

Expected<void> Queue::restore(QueueState const& state) {
    // The device holds at most `size` chains, and each of them came from the available ring.
    auto const outstanding = static_cast<uint16_t>(state.next_available - state.next_used);
    if (outstanding > m_config.size)
        return Error::format("queue state: next_available {} runs {} ahead of next_used {}, more than the size {}",
                             state.next_available, outstanding, state.next_used, m_config.size);
    std::vector<bool> in_flight(m_config.size, false);
    for (uint16_t head : state.in_flight_heads) {
        if (head >= m_config.size)
            return Error::format("queue state: in-flight head {} is outside the queue of size {}", head, m_config.size);
        if (in_flight[head])
            return Error::format("queue state: in-flight head {} is listed twice", head);
        in_flight[head] = true;
    }
    // Every chain popped and not yet returned is held: a gap without heads would leave buffers
    // the driver never gets back, heads without a gap would be returned twice.
    if (state.in_flight_heads.size() != outstanding)
        return Error::format("queue state: {} heads held but next_available {} runs {} ahead of next_used {}",
                             state.in_flight_heads.size(), state.next_available, outstanding, state.next_used);
    m_next_available = state.next_available;
    m_next_used = state.next_used;
    m_signalled_used = state.signalled_used;
    m_signalled_valid = state.signalled_valid;
    m_head_in_flight = std::move(in_flight);
    m_in_flight_count = static_cast<uint32_t>(state.in_flight_heads.size());
    return {};
}

} // namespace kvmm::virtio

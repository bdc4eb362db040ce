#include "devices/virtio/console/console_device.h"

#include "devices/virtio/config_space.h"
#include "devices/virtio/work_budget.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace kvmm::virtio {

namespace {

constexpr size_t RECEIVE_QUEUE = 0;
constexpr size_t TRANSMIT_QUEUE = 1;
// Config layout (5.3.4): cols u16, rows u16, max_nr_ports u32, emerg_wr u32.
constexpr size_t MAX_PORTS_OFFSET = 4;
constexpr uint64_t EMERGENCY_WRITE_OFFSET = 8;
constexpr size_t CONFIG_SIZE = 12;
// Output is copied out of guest memory in pieces of this size, so a huge chain costs time
// in proportion to its size but no more memory.
constexpr size_t COPY_PIECE = 4096;

} // namespace

uint64_t ConsoleDevice::features() const {
    return feature_bit(FEATURE_EMERG_WRITE) | feature_bit(FEATURE_RING_INDIRECT_DESC) |
           feature_bit(FEATURE_RING_EVENT_IDX);
}

void ConsoleDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    std::array<uint8_t, CONFIG_SIZE> config {};
    put_config<MAX_PORTS_OFFSET>(config, uint32_t { 1 });
    read_config_window(config, offset, data);
}

void ConsoleDevice::write_config(uint64_t offset, std::span<uint8_t const> data) {
    // 5.3.6.1: a write of emerg_wr outputs its low byte. Writes elsewhere are read-only fields.
    if (offset == EMERGENCY_WRITE_OFFSET && !data.empty())
        m_output->write(data.first(1));
}

Expected<void> ConsoleDevice::activate(ActivationContext context) {
    if (context.queues.size() < 2 || !context.queues[RECEIVE_QUEUE] || !context.queues[TRANSMIT_QUEUE])
        return Error("the console's receive and transmit queues were not both set up");
    take_context(std::move(context));
    return {};
}

void ConsoleDevice::reset() {
    drop_context();
    m_transmit_offset.reset();
}

Expected<void> ConsoleDevice::save_state(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    std::vector<uint8_t> const pending(m_pending.begin(), m_pending.end());
    writer.bytes(std::span<uint8_t const>(pending));
    writer.boolean(active());
    if (active()) {
        context().queues[RECEIVE_QUEUE]->save().encode(writer);
        context().queues[TRANSMIT_QUEUE]->save().encode(writer);
        writer.boolean(m_transmit_offset.has_value());
        if (m_transmit_offset) {
            writer.u16(m_transmit_chain.head());
            writer.u64(*m_transmit_offset);
        }
    }
    writer.end_section();
    return {};
}

namespace {

Expected<void> restore_queue(StateReader& reader, Queue& queue) {
    auto const state = TRY(QueueState::decode(reader, queue.size()));
    if (auto restored = queue.restore(state); !restored)
        return Error::format("saved state {}/{}: {}", ConsoleDevice::SECTION, QueueState::SECTION,
                             restored.error().message());
    return {};
}

} // namespace

// Everything is read and checked into locals first; the device changes only once all is good.
Expected<void> ConsoleDevice::restore_state(StateReader& reader, std::optional<ActivationContext> context) {
    TRY(reader.begin_section(SECTION, VERSION));
    auto const pending = TRY(reader.bytes("pending_input", MAX_PENDING_INPUT));
    bool const active = TRY(reader.boolean("active"));
    if (active != context.has_value())
        return Error::format("saved state {}/active: the device was {}, but its transport restores it {}", SECTION,
                             active ? "active" : "inactive", context ? "active" : "inactive");
    DescriptorChain transmit_chain;
    std::optional<uint64_t> transmit_offset;
    if (context) {
        if (context->queues.size() < 2 || !context->queues[RECEIVE_QUEUE] || !context->queues[TRANSMIT_QUEUE])
            return Error::format("saved state {}: the receive and transmit queues are not both ready", SECTION);
        auto& receive_queue = *context->queues[RECEIVE_QUEUE];
        auto& transmit_queue = *context->queues[TRANSMIT_QUEUE];
        TRY(restore_queue(reader, receive_queue));
        TRY(restore_queue(reader, transmit_queue));
        bool const held = TRY(reader.boolean("transmit_held"));
        // Receive buffers are returned as soon as they are filled and transmit chains once
        // copied out, so the device holds no chain but the one transmit chain it is copying.
        if (receive_queue.in_flight() != 0 || transmit_queue.in_flight() != (held ? 1u : 0u))
            return Error::format("saved state {}/transmit_held: the queues hold {} receive and {} transmit chains, "
                                 "but the device holds {}",
                                 SECTION, receive_queue.in_flight(), transmit_queue.in_flight(), held ? 1 : 0);
        if (held) {
            uint16_t const head = TRY(reader.u16("transmit_head"));
            uint64_t const offset = TRY(reader.u64("transmit_offset"));
            if (auto walked = transmit_queue.held_chain(head, transmit_chain); !walked)
                return Error::format("saved state {}/transmit_head: {}", SECTION, walked.error().message());
            // A chain is held only while bytes of it are left to copy.
            if (offset >= transmit_chain.readable_length())
                return Error::format("saved state {}/transmit_offset: {} is not inside the chain's {} readable bytes",
                                     SECTION, offset, transmit_chain.readable_length());
            transmit_offset = offset;
        }
    }
    TRY(reader.end_section());
    m_pending.assign(reinterpret_cast<uint8_t const*>(pending.data()),
                     reinterpret_cast<uint8_t const*>(pending.data()) + pending.size());
    if (context)
        take_context(std::move(*context));
    else
        drop_context();
    m_transmit_chain = std::move(transmit_chain);
    m_transmit_offset = transmit_offset;
    return {};
}

void ConsoleDevice::process_queue(size_t index) {
    if (!active())
        return;
    fail_on_error(index == TRANSMIT_QUEUE ? transmit() : deliver_input());
}

size_t ConsoleDevice::receive(std::span<uint8_t const> bytes) {
    size_t const room = MAX_PENDING_INPUT - m_pending.size();
    size_t const taken = std::min(room, bytes.size());
    m_pending.insert(m_pending.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(taken));
    if (active())
        fail_on_error(deliver_input());
    return taken;
}

Expected<void> ConsoleDevice::transmit() {
    auto& queue = *context().queues[TRANSMIT_QUEUE];
    auto const& memory = *context().memory;
    bool used_any = false;
    WorkBudget slice;
    m_scratch.resize(COPY_PIECE);
    while (true) {
        if (slice.exhausted()) {
            yield_turn(TRANSMIT_QUEUE);
            break;
        }
        if (!m_transmit_offset) {
            if (!TRY(queue.pop_or_enable_notifications(m_transmit_chain)))
                break;
            m_transmit_offset = 0;
        }
        // A chain may hold gigabytes (256 descriptors of any length): copy what this slice
        // allows and keep the chain, with its offset, for the next turn.
        uint64_t& offset = *m_transmit_offset;
        uint64_t const length = m_transmit_chain.readable_length();
        while (offset < length && !slice.exhausted()) {
            auto const piece = static_cast<size_t>(std::min<uint64_t>(COPY_PIECE, slice.bytes_left()));
            size_t const copied = TRY(m_transmit_chain.read(memory, offset, std::span(m_scratch).first(piece)));
            if (copied == 0)
                return Error::format("transmit chain {} ended at byte {} of {}", m_transmit_chain.head(), offset,
                                     length);
            m_output->write(std::span(reinterpret_cast<uint8_t const*>(m_scratch.data()), copied));
            offset += copied;
            m_bytes_transmitted += copied;
            slice.charge_bytes(copied);
        }
        if (offset < length)
            continue; // the slice is spent: the chain goes on next turn
        TRY(queue.add_used(m_transmit_chain.head(), 0));
        m_transmit_offset.reset();
        used_any = true;
        slice.charge_chain();
    }
    if (used_any)
        TRY(interrupt_if_wanted(queue));
    return {};
}

Expected<void> ConsoleDevice::deliver_input() {
    auto& queue = *context().queues[RECEIVE_QUEUE];
    auto const& memory = *context().memory;
    bool used_any = false;
    // Out of receive buffers with input left, the device asks to be notified of the next one
    // (EVENT_IDX): receive() runs only when the host has more input, so without that
    // notification the input already waiting would stay until then.
    while (!m_pending.empty() && TRY(queue.pop_or_enable_notifications(m_chain))) {
        size_t const length = static_cast<size_t>(std::min<uint64_t>(m_chain.writable_length(), m_pending.size()));
        if (length == 0) { // a receive buffer with no room: return it empty
            TRY(queue.add_used(m_chain.head(), 0));
            used_any = true;
            continue;
        }
        m_scratch.resize(length);
        std::copy_n(m_pending.begin(), length, reinterpret_cast<uint8_t*>(m_scratch.data()));
        auto const written = TRY(m_chain.write(memory, 0, m_scratch));
        m_pending.erase(m_pending.begin(), m_pending.begin() + static_cast<ptrdiff_t>(written));
        m_bytes_received += written;
        TRY(queue.add_used(m_chain.head(), static_cast<uint32_t>(written)));
        used_any = true;
    }
    if (used_any)
        TRY(interrupt_if_wanted(queue));
    return {};
}

} // namespace kvmm::virtio

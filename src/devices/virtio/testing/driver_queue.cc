#include "devices/virtio/testing/driver_queue.h"

#include <cstdlib>
#include <stdexcept>

namespace kvmm::virtio::testing {

namespace {

constexpr uint64_t PAGE = 4096;
uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

// Test support fails loudly: a broken harness must not look like a device bug.
template <typename T>
T must(Expected<T> result) {
    if (!result)
        throw std::runtime_error(result.error().message());
    if constexpr (!std::is_void_v<T>)
        return std::move(*result);
}

} // namespace

DriverQueue::DriverQueue(GuestMemory const& memory, GuestAddress base, uint16_t size) : m_memory(memory) {
    m_config.size = size;
    m_config.descriptor_table = base;
    m_config.available_ring = base.offset(16ull * size);
    uint64_t const available_end = m_config.available_ring.value() + 6 + 2ull * size;
    m_config.used_ring = GuestAddress(align_up(available_end, PAGE));
    uint64_t const used_end = m_config.used_ring.value() + 6 + 8ull * size;
    m_data_next = align_up(used_end, PAGE);
    m_data_end = memory.end_address().value();
    must(memory.fill_zero(base, used_end - base.value()));
}

GuestAddress DriverQueue::allocate(uint64_t length) {
    uint64_t const address = m_data_next;
    m_data_next = align_up(m_data_next + std::max<uint64_t>(length, 1), 16);
    if (m_data_next > m_data_end)
        throw std::runtime_error("DriverQueue data area exhausted");
    return GuestAddress(address);
}

DriverBuffer DriverQueue::buffer(std::span<std::byte const> contents) {
    auto const address = allocate(contents.size());
    must(m_memory.write(address, contents));
    return DriverBuffer { address, static_cast<uint32_t>(contents.size()), false };
}

DriverBuffer DriverQueue::writable_buffer(uint32_t length) {
    auto const address = allocate(length);
    must(m_memory.fill_zero(address, length));
    return DriverBuffer { address, length, true };
}

void DriverQueue::write_descriptor(uint16_t index, Descriptor const& descriptor) {
    must(m_memory.write_obj(m_config.descriptor_table.offset(16ull * index), descriptor));
}

uint16_t DriverQueue::add_chain(std::vector<DriverBuffer> const& buffers) {
    uint16_t const head = m_next_descriptor;
    for (size_t i = 0; i < buffers.size(); ++i) {
        uint16_t const index = static_cast<uint16_t>((head + i) % m_config.size);
        bool const last = i + 1 == buffers.size();
        Descriptor descriptor { buffers[i].address.value(), buffers[i].length,
                                static_cast<uint16_t>((buffers[i].writable ? DESCRIPTOR_F_WRITE : 0) |
                                                      (last ? 0 : DESCRIPTOR_F_NEXT)),
                                static_cast<uint16_t>((index + 1) % m_config.size) };
        write_descriptor(index, descriptor);
    }
    m_next_descriptor = static_cast<uint16_t>((head + buffers.size()) % m_config.size);
    offer(head);
    return head;
}

uint16_t DriverQueue::add_indirect_chain(std::vector<DriverBuffer> const& buffers) {
    auto const table = allocate(16 * buffers.size());
    for (size_t i = 0; i < buffers.size(); ++i) {
        bool const last = i + 1 == buffers.size();
        Descriptor descriptor { buffers[i].address.value(), buffers[i].length,
                                static_cast<uint16_t>((buffers[i].writable ? DESCRIPTOR_F_WRITE : 0) |
                                                      (last ? 0 : DESCRIPTOR_F_NEXT)),
                                static_cast<uint16_t>(i + 1) };
        must(m_memory.write_obj(table.offset(16 * i), descriptor));
    }
    uint16_t const head = m_next_descriptor;
    write_descriptor(head, Descriptor { table.value(), static_cast<uint32_t>(16 * buffers.size()),
                                        DESCRIPTOR_F_INDIRECT, 0 });
    m_next_descriptor = static_cast<uint16_t>((head + 1) % m_config.size);
    offer(head);
    return head;
}

void DriverQueue::offer(uint16_t head) {
    uint64_t const slot = m_available_index % m_config.size;
    must(m_memory.write_obj(m_config.available_ring.offset(4 + 2 * slot), head));
    set_available_index(static_cast<uint16_t>(m_available_index + 1));
}

void DriverQueue::set_available_index(uint16_t index) {
    m_available_index = index;
    must(m_memory.write_obj(m_config.available_ring.offset(2), index));
}

void DriverQueue::set_available_flags(uint16_t flags) { must(m_memory.write_obj(m_config.available_ring, flags)); }

void DriverQueue::set_used_event(uint16_t value) {
    must(m_memory.write_obj(m_config.available_ring.offset(4 + 2ull * m_config.size), value));
}

uint16_t DriverQueue::available_event() const {
    return must(m_memory.read_obj<uint16_t>(m_config.used_ring.offset(4 + 8ull * m_config.size)));
}

uint16_t DriverQueue::used_index() const { return must(m_memory.read_obj<uint16_t>(m_config.used_ring.offset(2))); }

std::optional<UsedElement> DriverQueue::pop_used() {
    if (used_index() == m_last_used)
        return std::nullopt;
    uint64_t const slot = m_last_used % m_config.size;
    ++m_last_used;
    return must(m_memory.read_obj<UsedElement>(m_config.used_ring.offset(4 + 8 * slot)));
}

std::vector<std::byte> DriverQueue::read(GuestAddress address, uint32_t length) const {
    std::vector<std::byte> bytes(length);
    must(m_memory.read(address, bytes));
    return bytes;
}

} // namespace kvmm::virtio::testing

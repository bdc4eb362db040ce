// libFuzzer target: a hostile driver writes anything into a split virtqueue's descriptor
// table, available ring and buffers, and the device side pops, returns and suppresses.
// Queue must reject what is malformed without crashing, looping or reading outside guest RAM.
//
// Input: byte 0 selects the negotiated ring features; byte 1 the queue size (1 << (b % 9));
// then the bytes are copied over the descriptor table, the available ring and an indirect
// table area, in that order.
#include "devices/virtio/queue.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

using namespace kvmm;
using namespace kvmm::virtio;

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    if (size < 2)
        return 0;
    static GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 1 << 20 } });
    (void)memory.fill_zero(GuestAddress(0), 1 << 20);
    uint64_t features = 0;
    if (data[0] & 1)
        features |= feature_bit(FEATURE_RING_INDIRECT_DESC);
    if (data[0] & 2)
        features |= feature_bit(FEATURE_RING_EVENT_IDX);
    uint16_t const queue_size = static_cast<uint16_t>(1u << (data[1] % 9));
    QueueConfig const config { queue_size, GuestAddress(0x1000), GuestAddress(0x10000), GuestAddress(0x20000) };
    // Guest bytes: descriptors at 0x1000, the available ring at 0x10000, free space after 0x30000
    // (where descriptors may point).
    size_t offset = 2;
    auto copy_to = [&](uint64_t address, size_t length) {
        size_t const take = std::min(length, size - offset);
        (void)memory.write(GuestAddress(address), std::as_bytes(std::span(data + offset, take)));
        offset += take;
    };
    copy_to(0x1000, 16u * queue_size);
    copy_to(0x10000, 6u + 2u * queue_size);
    copy_to(0x30000, size - offset);

    auto queue = Queue::create(memory, config, features);
    if (!queue)
        return 0;
    DescriptorChain chain;
    std::byte scratch[256];
    for (int round = 0; round < 2 * queue_size + 4; ++round) {
        auto popped = round % 2 ? queue->pop(chain) : queue->pop_or_enable_notifications(chain);
        if (!popped || !*popped)
            break;
        (void)chain.read(memory, 0, scratch);
        (void)chain.write(memory, 0, scratch);
        if (round % 3 == 2) {
            queue->undo_pop(chain);
            (void)queue->pop(chain);
        }
        if (!queue->add_used(chain.head(), static_cast<uint32_t>(chain.writable_length())))
            break;
        (void)queue->should_interrupt();
    }
    (void)queue->enable_notifications();
    return 0;
}

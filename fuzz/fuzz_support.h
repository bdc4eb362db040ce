// Shared pieces of the virtio libFuzzer targets: the reader that turns the fuzz input into
// values, an interrupt line that goes nowhere, the bench (guest RAM, event loop, line) that a
// device is activated on through its MMIO transport, and the descriptor-table layout that the
// block and balloon targets read from the input.
//
// Threading: none; each fuzz iteration builds and drops its own objects on the fuzzer's thread.
#pragma once

#include "devices/virtio/mmio_transport.h"
#include "devices/virtio/testing/driver_queue.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>

namespace kvmm::fuzz {

// Reads values from the input, little-endian; zeros once it runs out, so every input, however
// short, is a complete test case.
class FuzzInput {
public:
    explicit FuzzInput(std::span<uint8_t const> data) : m_data(data) {}

    // The next `bytes` bytes (at most 8) as a little-endian number.
    uint64_t take(size_t bytes) {
        uint64_t value = 0;
        for (size_t i = 0; i < bytes && m_offset < m_data.size(); ++i)
            value |= uint64_t { m_data[m_offset++] } << (8 * i);
        return value;
    }

    // The next sizeof(T) bytes as a T, in host byte order; missing bytes read as zero.
    template <typename T>
    requires std::is_trivially_copyable_v<T> T take_object() {
        T value {};
        size_t const count = std::min(sizeof(T), m_data.size() - m_offset);
        if (count > 0)
            std::memcpy(&value, m_data.data() + m_offset, count);
        m_offset += count;
        return value;
    }

    // Up to `count` of the next bytes (fewer when the input ends first).
    std::span<std::byte const> bytes(size_t count) {
        auto const taken = m_data.subspan(m_offset, std::min(count, m_data.size() - m_offset));
        m_offset += taken.size();
        return std::as_bytes(taken);
    }

    std::span<uint8_t const> rest() const { return m_data.subspan(m_offset); }
    bool empty() const { return m_offset >= m_data.size(); }

private:
    std::span<uint8_t const> m_data;
    size_t m_offset { 0 }; // never past m_data.size()
};

// The fuzz targets do not look at interrupts; the device's signalling still runs.
class NullInterruptLine final : public InterruptLine {
public:
    void set_level(bool) override {}
};

// What a device under test needs around it: guest RAM at address 0, an event loop and an
// interrupt line. Members are declared before any transport made from them, so they outlive it.
struct FuzzBench {
    explicit FuzzBench(uint64_t memory_size)
        : memory(*GuestMemory::create({ { GuestAddress(0), memory_size } })), loop(*EventLoop::create()) {}

    // Puts `device` behind a virtio-mmio transport on this bench (not yet activated: the
    // driver does that).
    Expected<std::unique_ptr<virtio::MmioTransport>> attach(std::string name,
                                                            std::unique_ptr<virtio::VirtioDevice> device) {
        return virtio::MmioTransport::create(std::move(name), std::move(device), memory, line, loop);
    }

    GuestMemory memory;
    EventLoop loop;
    NullInterruptLine line;
};

// The guest-RAM area that descriptor addresses are folded into, so that buffers hold fuzz bytes.
struct DataArea {
    uint64_t base;
    uint64_t size;
};

// Fills up to queue-size descriptors and then the available ring from the input. Each
// descriptor: [mode][address x4]([address high x4] when mode bit 7)[length x2, or x4 when mode
// bit 6][next]; flags are mode bits 0-2. Addresses are folded into `data` unless mode bit 7 is set.
inline void lay_out_descriptors(FuzzInput& input, virtio::testing::DriverQueue& queue, DataArea data) {
    uint16_t const queue_size = queue.size();
    size_t const descriptors = input.take(1) % (queue_size + 1);
    for (uint16_t i = 0; i < descriptors; ++i) {
        uint64_t const mode = input.take(1);
        uint64_t address = input.take(4);
        if (!(mode & 0x80))
            address = data.base + address % data.size;
        else
            address |= input.take(4) << 32;
        auto const length = static_cast<uint32_t>((mode & 0x40) ? input.take(4) : input.take(2));
        auto const flags = static_cast<uint16_t>(mode & 0x7);
        auto const next = static_cast<uint16_t>(input.take(1));
        queue.write_descriptor(i, virtio::Descriptor { address, length, flags, next });
    }
    size_t const offered = input.take(1) % (queue_size + 1);
    for (size_t i = 0; i < offered; ++i)
        queue.offer(static_cast<uint16_t>(input.take(1)));
}

// Copies what is left of the input into the data area (as much as fits).
inline void fill_data_area(FuzzInput const& input, GuestMemory const& memory, DataArea data) {
    auto const contents = input.rest();
    (void)memory.write(GuestAddress(data.base),
                       std::as_bytes(contents.first(std::min<size_t>(contents.size(), data.size))));
}

} // namespace kvmm::fuzz

#include "devices/virtio/balloon/balloon_statistics.h"

#include <algorithm>

namespace kvmm::virtio {

namespace {

// The fields are little-endian (virtio 1.2 section 1.4); decode bytewise so that nothing
// depends on the host's byte order or on the buffer's alignment.
uint64_t load_le(std::span<std::byte const> bytes) {
    uint64_t value = 0;
    for (size_t i = bytes.size(); i-- > 0;)
        value = (value << 8) | static_cast<uint8_t>(bytes[i]);
    return value;
}

} // namespace

size_t BalloonStatistics::parse(std::span<std::byte const> buffer) {
    size_t const entries = std::min(buffer.size() / STAT_ENTRY_SIZE, MAX_ENTRIES);
    for (size_t i = 0; i < entries; ++i) {
        auto const entry = buffer.subspan(i * STAT_ENTRY_SIZE, STAT_ENTRY_SIZE);
        auto const tag = load_le(entry.first(2));
        if (tag < STAT_TAG_COUNT)
            m_values[tag] = load_le(entry.subspan(2));
    }
    ++m_updates;
    return entries;
}

} // namespace kvmm::virtio

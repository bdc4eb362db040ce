#include "devices/virtio/config_space.h"

#include <algorithm>
#include <cstdint>

namespace kvmm::virtio {

void read_config_window(std::span<uint8_t const> config, uint64_t offset, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), uint8_t { 0 });
    if (offset >= config.size())
        return;
    // offset < config.size(), so neither the subtraction nor the copy can run past the end.
    size_t const count = static_cast<size_t>(std::min<uint64_t>(data.size(), config.size() - offset));
    std::memcpy(data.data(), config.data() + offset, count);
}

size_t write_config_field(std::span<uint8_t> field, uint64_t field_offset, uint64_t offset,
                          std::span<uint8_t const> data) {
    size_t ignored = 0;
    for (size_t i = 0; i < data.size(); ++i) {
        // The transport's offsets are small, but the bounds must not depend on that.
        bool const inside =
            offset <= UINT64_MAX - i && offset + i >= field_offset && offset + i - field_offset < field.size();
        if (!inside) {
            ++ignored;
            continue;
        }
        field[static_cast<size_t>(offset + i - field_offset)] = data[i];
    }
    return ignored;
}

} // namespace kvmm::virtio

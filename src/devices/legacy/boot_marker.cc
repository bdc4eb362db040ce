#include "devices/legacy/boot_marker.h"

#include "base/logging.h"

namespace kvmm {

void BootMarker::read(uint64_t, std::span<uint8_t> data) {
    for (auto& byte : data)
        byte = 0;
}

void BootMarker::write(uint64_t offset, std::span<uint8_t const> data) {
    if (offset != 0 || data.empty() || data[0] != BOOT_MARKER_VALUE)
        return;
    ++m_count;
    auto const elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(time_since_process_start());
    spdlog::info("guest boot marker: {} ms since kvmm started", elapsed.count());
}

} // namespace kvmm

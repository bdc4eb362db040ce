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
    auto const count = ++m_count;
    // Microseconds: start-up is measured in single milliseconds.
    auto const elapsed = time_since_process_start().count();
    spdlog::info("guest boot marker {}: {}.{:03} ms since kvmm started", count, elapsed / 1000, elapsed % 1000);
}

void BootMarkerState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u32(markers_seen);
    writer.end_section();
}

Expected<BootMarkerState> BootMarkerState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    BootMarkerState state;
    state.markers_seen = TRY(reader.u32("markers_seen"));
    TRY(reader.end_section());
    return state;
}

} // namespace kvmm

#include "devices/virtio/testing/mmio_driver.h"

#include <cstring>

namespace kvmm::virtio::testing {

uint32_t MmioDriver::read32(uint64_t offset) {
    uint8_t bytes[4];
    m_transport.read(offset, bytes);
    uint32_t value;
    std::memcpy(&value, bytes, 4);
    return value;
}

void MmioDriver::write32(uint64_t offset, uint32_t value) {
    uint8_t bytes[4];
    std::memcpy(bytes, &value, 4);
    m_transport.write(offset, bytes);
}

uint64_t MmioDriver::device_features() {
    write32(0x14, 0);
    uint64_t features = read32(0x10);
    write32(0x14, 1);
    features |= uint64_t { read32(0x10) } << 32;
    return features;
}

uint32_t MmioDriver::initialize(uint64_t features, std::vector<DriverQueue*> const& queues) {
    features |= feature_bit(FEATURE_VERSION_1);
    write32(0x70, 0);
    write32(0x70, STATUS_ACKNOWLEDGE);
    write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    write32(0x24, 0);
    write32(0x20, static_cast<uint32_t>(features));
    write32(0x24, 1);
    write32(0x20, static_cast<uint32_t>(features >> 32));
    write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(read32(0x70) & STATUS_FEATURES_OK))
        return read32(0x70);
    for (size_t i = 0; i < queues.size(); ++i) {
        if (!queues[i])
            continue;
        auto const config = queues[i]->config();
        write32(0x30, static_cast<uint32_t>(i));
        write32(0x38, config.size);
        write32(0x80, static_cast<uint32_t>(config.descriptor_table.value()));
        write32(0x84, static_cast<uint32_t>(config.descriptor_table.value() >> 32));
        write32(0x90, static_cast<uint32_t>(config.available_ring.value()));
        write32(0x94, static_cast<uint32_t>(config.available_ring.value() >> 32));
        write32(0xa0, static_cast<uint32_t>(config.used_ring.value()));
        write32(0xa4, static_cast<uint32_t>(config.used_ring.value() >> 32));
        write32(0x44, 1);
    }
    write32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    run_event_loop();
    return read32(0x70);
}

void MmioDriver::notify(uint16_t queue) { write32(0x50, queue); }

void MmioDriver::run_event_loop(int timeout_ms) {
    while (true) {
        auto dispatched = m_event_loop.run_once(std::chrono::milliseconds(timeout_ms));
        if (!dispatched || *dispatched == 0)
            return;
    }
}

Expected<void> restore_transport(MmioTransport& transport, std::span<std::byte const> payload) {
    StateReader reader(payload);
    TRY(transport.restore_state(reader));
    if (!reader.at_end())
        return Error("bytes left after the device's section");
    return {};
}

} // namespace kvmm::virtio::testing

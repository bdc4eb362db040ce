#include "devices/virtio/vsock/vsock_packet.h"

#include <bit>
#include <cstring>

namespace kvmm::virtio::vsock {

// The wire format is little-endian (5.10.6); x86-64 hosts are too, so fields are copied as is.
static_assert(std::endian::native == std::endian::little);

namespace {

// Field offsets of struct virtio_vsock_hdr (5.10.6).
constexpr size_t SOURCE_CID = 0;
constexpr size_t DESTINATION_CID = 8;
constexpr size_t SOURCE_PORT = 16;
constexpr size_t DESTINATION_PORT = 20;
constexpr size_t LENGTH = 24;
constexpr size_t TYPE = 28;
constexpr size_t OPERATION = 30;
constexpr size_t FLAGS = 32;
constexpr size_t BUFFER_ALLOCATION = 36;
constexpr size_t FORWARD_COUNT = 40;

template <typename T>
T load(std::span<std::byte const, HEADER_SIZE> bytes, size_t offset) {
    T value;
    std::memcpy(&value, bytes.data() + offset, sizeof(T));
    return value;
}

template <typename T>
void store(HeaderBytes& bytes, size_t offset, T value) {
    std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

} // namespace

PacketHeader decode_header(std::span<std::byte const, HEADER_SIZE> bytes) {
    return PacketHeader {
        .source_cid = load<uint64_t>(bytes, SOURCE_CID),
        .destination_cid = load<uint64_t>(bytes, DESTINATION_CID),
        .source_port = load<uint32_t>(bytes, SOURCE_PORT),
        .destination_port = load<uint32_t>(bytes, DESTINATION_PORT),
        .length = load<uint32_t>(bytes, LENGTH),
        .type = load<uint16_t>(bytes, TYPE),
        .operation = load<uint16_t>(bytes, OPERATION),
        .flags = load<uint32_t>(bytes, FLAGS),
        .buffer_allocation = load<uint32_t>(bytes, BUFFER_ALLOCATION),
        .forward_count = load<uint32_t>(bytes, FORWARD_COUNT),
    };
}

HeaderBytes encode_header(PacketHeader const& header) {
    HeaderBytes bytes {};
    store(bytes, SOURCE_CID, header.source_cid);
    store(bytes, DESTINATION_CID, header.destination_cid);
    store(bytes, SOURCE_PORT, header.source_port);
    store(bytes, DESTINATION_PORT, header.destination_port);
    store(bytes, LENGTH, header.length);
    store(bytes, TYPE, header.type);
    store(bytes, OPERATION, header.operation);
    store(bytes, FLAGS, header.flags);
    store(bytes, BUFFER_ALLOCATION, header.buffer_allocation);
    store(bytes, FORWARD_COUNT, header.forward_count);
    return bytes;
}

} // namespace kvmm::virtio::vsock

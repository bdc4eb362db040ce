// The virtio-vsock packet header (virtio 1.2 section 5.10.6 "Device
// Operation", struct virtio_vsock_hdr) and its little-endian wire form.
//
// The header is decoded from a copy of guest bytes field by field, so a
// driver changing the buffer afterwards cannot affect what was checked.
//
// Threading: plain values and pure functions.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace kvmm::virtio::vsock {

// 5.10.4: the host's address; guests get 3 and up.
inline constexpr uint64_t HOST_CID = 2;
// 5.10.6: virtio_vsock_hdr is 44 bytes, no padding.
inline constexpr size_t HEADER_SIZE = 44;

// 5.10.6 type field (SEQPACKET is not offered).
inline constexpr uint16_t TYPE_STREAM = 1;

enum class Operation : uint16_t {
    Invalid = 0,
    Request = 1,
    Response = 2,
    Reset = 3,
    Shutdown = 4,
    ReadWrite = 5,
    CreditUpdate = 6,
    CreditRequest = 7,
};

// 5.10.6.5: SHUTDOWN flags - the sender will receive / send no more data.
inline constexpr uint32_t SHUTDOWN_RECEIVE = 1;
inline constexpr uint32_t SHUTDOWN_SEND = 2;

struct PacketHeader {
    uint64_t source_cid { 0 };
    uint64_t destination_cid { 0 };
    uint32_t source_port { 0 };
    uint32_t destination_port { 0 };
    uint32_t length { 0 };
    uint16_t type { 0 };
    uint16_t operation { 0 };
    uint32_t flags { 0 };
    uint32_t buffer_allocation { 0 }; // buf_alloc: the sender's receive buffer size
    uint32_t forward_count { 0 };     // fwd_cnt: bytes the sender has consumed from it

    bool operator==(PacketHeader const&) const = default;
};

using HeaderBytes = std::array<std::byte, HEADER_SIZE>;

PacketHeader decode_header(std::span<std::byte const, HEADER_SIZE> bytes);
HeaderBytes encode_header(PacketHeader const& header);

} // namespace kvmm::virtio::vsock

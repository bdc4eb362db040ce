// Constants of the virtio 1.2 specification (OASIS, 2022) that the transport,
// the virtqueues and the devices share. Section numbers refer to that document.
#pragma once

#include <cstdint>

namespace kvmm::virtio {

// Device IDs (5 "Device Types").
enum class DeviceType : uint32_t {
    Net = 1,
    Block = 2,
    Console = 3,
    Entropy = 4,
    Balloon = 5,
    Vsock = 19,
};

// Device status field (2.1).
inline constexpr uint32_t STATUS_ACKNOWLEDGE = 1;
inline constexpr uint32_t STATUS_DRIVER = 2;
inline constexpr uint32_t STATUS_DRIVER_OK = 4;
inline constexpr uint32_t STATUS_FEATURES_OK = 8;
inline constexpr uint32_t STATUS_DEVICE_NEEDS_RESET = 64;
inline constexpr uint32_t STATUS_FAILED = 128;
// The bits a driver may write (2.1: the others are reserved; DEVICE_NEEDS_RESET is the device's).
inline constexpr uint32_t STATUS_DRIVER_WRITABLE =
    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK | STATUS_FEATURES_OK | STATUS_FAILED;

// Reserved feature bits (6 "Reserved Feature Bits").
inline constexpr unsigned FEATURE_RING_INDIRECT_DESC = 28;
inline constexpr unsigned FEATURE_RING_EVENT_IDX = 29;
inline constexpr unsigned FEATURE_VERSION_1 = 32;

constexpr uint64_t feature_bit(unsigned bit) { return uint64_t { 1 } << bit; }
constexpr bool has_feature(uint64_t features, unsigned bit) { return (features & feature_bit(bit)) != 0; }

// Split virtqueue layout (2.7).
inline constexpr uint16_t DESCRIPTOR_F_NEXT = 1;
inline constexpr uint16_t DESCRIPTOR_F_WRITE = 2;
inline constexpr uint16_t DESCRIPTOR_F_INDIRECT = 4;
inline constexpr uint16_t AVAIL_F_NO_INTERRUPT = 1;
inline constexpr uint16_t USED_F_NO_NOTIFY = 1;

// The largest split ring the specification allows (2.7: Queue Size up to 32768).
inline constexpr uint16_t MAX_QUEUE_SIZE = 32768;

struct Descriptor {
    uint64_t address;
    uint32_t length;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(Descriptor) == 16);

struct UsedElement {
    uint32_t id;
    uint32_t length;
};
static_assert(sizeof(UsedElement) == 8);

// Interrupt status bits of the MMIO transport (4.2.2).
inline constexpr uint32_t INTERRUPT_USED_BUFFER = 1;
inline constexpr uint32_t INTERRUPT_CONFIG_CHANGE = 2;

} // namespace kvmm::virtio

// Maps the virtio-net receive offloads a guest negotiated to the TUN offload
// flags (TUN_F_*, <linux/if_tun.h>) that tell the kernel which partially
// checksummed or segmentation-offloaded (GSO) frames it may hand to the TAP.
//
// The kernel may only pass such frames if the guest can take them, so the flags
// follow the guest's GUEST_* features, never the device's HOST_* ones.
// Threading: pure function, no state.
#pragma once

#include <cstdint>

namespace kvmm {

// virtio-net feature bit numbers (virtio 1.2 section 5.1.3). Kept in a namespace of
// their own so they cannot collide with the macros of <linux/virtio_net.h>.
namespace virtio_net_feature {
constexpr unsigned GUEST_CSUM = 1;
constexpr unsigned GUEST_TSO4 = 7;
constexpr unsigned GUEST_TSO6 = 8;
constexpr unsigned GUEST_ECN = 9;
constexpr unsigned GUEST_UFO = 10;
} // namespace virtio_net_feature

// Returns the TUN_F_* flags for TUNSETOFFLOAD that match `negotiated_features` (a mask of
// 1 << bit). Follows the dependencies of virtio 1.2 section 5.1.3.1: TSO4/TSO6/UFO need
// GUEST_CSUM, and ECN needs TSO4 or TSO6; a feature whose prerequisite is missing maps to
// nothing (the kernel would refuse TUN_F_TSO* without TUN_F_CSUM with EINVAL anyway).
unsigned tun_offloads_for_guest_features(uint64_t negotiated_features);

} // namespace kvmm

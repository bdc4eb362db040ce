#include "backends/net/offloads.h"

#include <linux/if_tun.h>

namespace kvmm {

namespace {

bool has_feature(uint64_t features, unsigned bit) { return (features >> bit) & 1; }

} // namespace

unsigned tun_offloads_for_guest_features(uint64_t negotiated_features) {
    using namespace virtio_net_feature;
    // Without GUEST_CSUM the guest cannot take a frame with a partial checksum, and every
    // segmentation offload produces one.
    if (!has_feature(negotiated_features, GUEST_CSUM))
        return 0;
    unsigned flags = TUN_F_CSUM;
    if (has_feature(negotiated_features, GUEST_TSO4))
        flags |= TUN_F_TSO4;
    if (has_feature(negotiated_features, GUEST_TSO6))
        flags |= TUN_F_TSO6;
    if (has_feature(negotiated_features, GUEST_ECN) && (flags & (TUN_F_TSO4 | TUN_F_TSO6)))
        flags |= TUN_F_TSO_ECN;
    if (has_feature(negotiated_features, GUEST_UFO))
        flags |= TUN_F_UFO;
    return flags;
}

} // namespace kvmm

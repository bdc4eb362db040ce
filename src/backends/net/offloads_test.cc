#include "backends/net/offloads.h"

#include <gtest/gtest.h>
#include <linux/if_tun.h>

namespace kvmm {
namespace {

using namespace virtio_net_feature;

constexpr uint64_t bit(unsigned feature) { return uint64_t { 1 } << feature; }

TEST(TunOffloadsForGuestFeatures, NoFeatures_MapsToNoOffloads) { EXPECT_EQ(tun_offloads_for_guest_features(0), 0u); }

TEST(TunOffloadsForGuestFeatures, ChecksumOnly_MapsToCsum) {
    EXPECT_EQ(tun_offloads_for_guest_features(bit(GUEST_CSUM)), unsigned { TUN_F_CSUM });
}

TEST(TunOffloadsForGuestFeatures, AllGuestOffloads_MapToEveryTunFlag) {
    uint64_t const features = bit(GUEST_CSUM) | bit(GUEST_TSO4) | bit(GUEST_TSO6) | bit(GUEST_ECN) | bit(GUEST_UFO);
    EXPECT_EQ(tun_offloads_for_guest_features(features),
              unsigned { TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO });
}

TEST(TunOffloadsForGuestFeatures, EachSegmentationFeature_MapsToItsOwnFlag) {
    EXPECT_EQ(tun_offloads_for_guest_features(bit(GUEST_CSUM) | bit(GUEST_TSO4)), unsigned { TUN_F_CSUM | TUN_F_TSO4 });
    EXPECT_EQ(tun_offloads_for_guest_features(bit(GUEST_CSUM) | bit(GUEST_TSO6)), unsigned { TUN_F_CSUM | TUN_F_TSO6 });
    EXPECT_EQ(tun_offloads_for_guest_features(bit(GUEST_CSUM) | bit(GUEST_UFO)), unsigned { TUN_F_CSUM | TUN_F_UFO });
    EXPECT_EQ(tun_offloads_for_guest_features(bit(GUEST_CSUM) | bit(GUEST_TSO6) | bit(GUEST_ECN)),
              unsigned { TUN_F_CSUM | TUN_F_TSO6 | TUN_F_TSO_ECN });
}

TEST(TunOffloadsForGuestFeatures, SegmentationWithoutChecksum_MapsToNothing) {
    EXPECT_EQ(tun_offloads_for_guest_features(bit(GUEST_TSO4) | bit(GUEST_TSO6) | bit(GUEST_ECN) | bit(GUEST_UFO)), 0u);
}

TEST(TunOffloadsForGuestFeatures, EcnWithoutTso_IsDropped) {
    EXPECT_EQ(tun_offloads_for_guest_features(bit(GUEST_CSUM) | bit(GUEST_ECN) | bit(GUEST_UFO)),
              unsigned { TUN_F_CSUM | TUN_F_UFO });
}

TEST(TunOffloadsForGuestFeatures, UnrelatedFeatureBits_AreIgnored) {
    // HOST_TSO4 (11), MRG_RXBUF (15), VERSION_1 (32): device-side or transport features.
    uint64_t const unrelated = bit(11) | bit(15) | bit(32) | bit(0);
    EXPECT_EQ(tun_offloads_for_guest_features(unrelated), 0u);
    EXPECT_EQ(tun_offloads_for_guest_features(unrelated | bit(GUEST_CSUM)), unsigned { TUN_F_CSUM });
}

} // namespace
} // namespace kvmm

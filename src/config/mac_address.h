// MacAddress: parsing, formatting and generation of the Ethernet address a
// virtio-net device reports to its guest (virtio 1.2 section 5.1.4, `mac`).
//
// A guest NIC needs a unicast address (IEEE 802 bit 0 of the first octet, the
// I/G "group" bit, clear). Generated addresses set bit 1 of the first octet,
// the U/L bit, so they live in the locally administered space and never clash
// with a vendor-assigned (OUI) address. Threading: pure functions, no state.
#pragma once

#include "base/expected.h"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvmm {

using MacAddress = std::array<uint8_t, 6>;

// Bits of the first octet (IEEE 802-2014 section 8.2).
constexpr uint8_t MAC_GROUP_BIT = 0x01;
constexpr uint8_t MAC_LOCALLY_ADMINISTERED_BIT = 0x02;

// Parses "aa:bb:cc:dd:ee:ff" (hex digits in either case, exactly six colon-separated
// pairs). Rejects multicast/broadcast addresses (group bit set) and the all-zero address,
// which are not valid NIC addresses.
Expected<MacAddress> parse_mac_address(std::string_view text);

// Lower-case "aa:bb:cc:dd:ee:ff".
std::string format_mac_address(MacAddress const& address);

// Turns six arbitrary bytes into a locally administered unicast address: the group bit
// is cleared and the locally administered bit set; the other 46 bits are kept.
MacAddress make_locally_administered_mac_address(std::array<uint8_t, 6> random_bytes);

// A random locally administered unicast address, from getrandom(2).
Expected<MacAddress> generate_mac_address();

} // namespace kvmm

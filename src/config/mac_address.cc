#include "config/mac_address.h"

#include <sys/random.h>

#include <cerrno>

namespace kvmm {

namespace {

constexpr size_t MAC_TEXT_LENGTH = 17; // six pairs and five colons

int hex_digit_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

} // namespace

Expected<MacAddress> parse_mac_address(std::string_view text) {
    if (text.size() != MAC_TEXT_LENGTH)
        return Error::format("MAC address '{}' is {} characters long; expected {} (aa:bb:cc:dd:ee:ff)", text,
                             text.size(), MAC_TEXT_LENGTH);
    MacAddress address {};
    for (size_t octet = 0; octet < address.size(); ++octet) {
        size_t const position = octet * 3;
        if (octet > 0 && text[position - 1] != ':')
            return Error::format("MAC address '{}': expected ':' at position {}, found '{}'", text, position - 1,
                                 text[position - 1]);
        int const high = hex_digit_value(text[position]);
        int const low = hex_digit_value(text[position + 1]);
        if (high < 0 || low < 0)
            return Error::format("MAC address '{}': '{}' at position {} is not a hex byte", text,
                                 text.substr(position, 2), position);
        address[octet] = static_cast<uint8_t>(high << 4 | low);
    }
    if (address[0] & MAC_GROUP_BIT)
        return Error::format("MAC address '{}' is a multicast/broadcast address (group bit of the first octet set); "
                             "a NIC needs a unicast address",
                             text);
    if (address == MacAddress {})
        return Error::format("MAC address '{}' is all zeros, which is not a valid NIC address", text);
    return address;
}

std::string format_mac_address(MacAddress const& address) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", address[0], address[1], address[2], address[3],
                       address[4], address[5]);
}

MacAddress make_locally_administered_mac_address(std::array<uint8_t, 6> random_bytes) {
    random_bytes[0] = static_cast<uint8_t>((random_bytes[0] & ~MAC_GROUP_BIT) | MAC_LOCALLY_ADMINISTERED_BIT);
    return random_bytes;
}

Expected<MacAddress> generate_mac_address() {
    std::array<uint8_t, 6> random_bytes {};
    size_t filled = 0;
    while (filled < random_bytes.size()) {
        ssize_t const result = ::getrandom(random_bytes.data() + filled, random_bytes.size() - filled, 0);
        if (result < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno("getrandom for a MAC address");
        }
        filled += static_cast<size_t>(result);
    }
    return make_locally_administered_mac_address(random_bytes);
}

} // namespace kvmm

#include "config/mac_address.h"

#include <gtest/gtest.h>

namespace kvmm {
namespace {

TEST(ParseMacAddress, ValidUnicastAddress_ParsesEveryOctetInEitherCase) {
    auto address = parse_mac_address("52:54:Ab:cD:0e:F9");
    ASSERT_TRUE(address.has_value()) << address.error().message();
    EXPECT_EQ(*address, (MacAddress { 0x52, 0x54, 0xab, 0xcd, 0x0e, 0xf9 }));
}

TEST(ParseMacAddress, GroupBitSet_IsRejectedAsMulticast) {
    auto multicast = parse_mac_address("01:00:5e:00:00:01");
    ASSERT_FALSE(multicast.has_value());
    EXPECT_NE(multicast.error().message().find("multicast"), std::string::npos) << multicast.error().message();
    EXPECT_FALSE(parse_mac_address("ff:ff:ff:ff:ff:ff").has_value());
    EXPECT_FALSE(parse_mac_address("03:00:00:00:00:01").has_value());
}

TEST(ParseMacAddress, AllZero_IsRejected) {
    auto zero = parse_mac_address("00:00:00:00:00:00");
    ASSERT_FALSE(zero.has_value());
    EXPECT_NE(zero.error().message().find("all zeros"), std::string::npos) << zero.error().message();
}

TEST(ParseMacAddress, WrongLength_IsRejectedNamingLength) {
    auto short_text = parse_mac_address("52:54:00:12:34");
    ASSERT_FALSE(short_text.has_value());
    EXPECT_NE(short_text.error().message().find("14 characters"), std::string::npos) << short_text.error().message();
    EXPECT_FALSE(parse_mac_address("52:54:00:12:34:567").has_value());
    EXPECT_FALSE(parse_mac_address("").has_value());
}

TEST(ParseMacAddress, BadHexOrSeparator_IsRejected) {
    auto bad_hex = parse_mac_address("52:54:0g:12:34:56");
    ASSERT_FALSE(bad_hex.has_value());
    EXPECT_NE(bad_hex.error().message().find("'0g'"), std::string::npos) << bad_hex.error().message();
    EXPECT_FALSE(parse_mac_address("52-54-00-12-34-56").has_value());
    EXPECT_FALSE(parse_mac_address("52:54:00:12:34: 6").has_value());
    EXPECT_FALSE(parse_mac_address("5254:0012:3456::").has_value());
}

TEST(FormatMacAddress, Output_RoundTripsThroughParser) {
    MacAddress const address { 0x02, 0xab, 0x00, 0x10, 0xfe, 0x7f };
    std::string const text = format_mac_address(address);
    EXPECT_EQ(text, "02:ab:00:10:fe:7f");
    auto parsed = parse_mac_address(text);
    ASSERT_TRUE(parsed.has_value()) << parsed.error().message();
    EXPECT_EQ(*parsed, address);
}

TEST(MakeLocallyAdministeredMacAddress, AnyBytes_SetsLocalBitClearsGroupBitKeepsTheRest) {
    EXPECT_EQ(make_locally_administered_mac_address({ 0xff, 1, 2, 3, 4, 5 }), (MacAddress { 0xfe, 1, 2, 3, 4, 5 }));
    EXPECT_EQ(make_locally_administered_mac_address({ 0x00, 0, 0, 0, 0, 0 }), (MacAddress { 0x02, 0, 0, 0, 0, 0 }));
    EXPECT_EQ(make_locally_administered_mac_address({ 0x51, 9, 8, 7, 6, 5 }), (MacAddress { 0x52, 9, 8, 7, 6, 5 }));
}

TEST(GenerateMacAddress, ManyAddresses_AreLocalUnicastParsableAndNotAllEqual) {
    MacAddress first {};
    bool saw_different = false;
    for (int i = 0; i < 32; ++i) {
        auto address = generate_mac_address();
        ASSERT_TRUE(address.has_value()) << address.error().message();
        EXPECT_EQ((*address)[0] & MAC_GROUP_BIT, 0);
        EXPECT_NE((*address)[0] & MAC_LOCALLY_ADMINISTERED_BIT, 0);
        EXPECT_TRUE(parse_mac_address(format_mac_address(*address)).has_value());
        if (i == 0)
            first = *address;
        else if (*address != first)
            saw_different = true;
    }
    // 46 random bits: 32 identical draws would mean the generator is not random at all.
    EXPECT_TRUE(saw_different);
}

} // namespace
} // namespace kvmm

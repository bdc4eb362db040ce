#include "base/state_io.h"

#include <gtest/gtest.h>

#include <cstring>

namespace kvmm {
namespace {

std::vector<std::byte> sample_payload() {
    StateWriter writer;
    writer.begin_section("device", 2);
    writer.u8(7);
    writer.u16(0x1234);
    writer.boolean(true);
    writer.begin_section("queue0", 1);
    writer.u32(0xdeadbeef);
    writer.u64(1ull << 40);
    writer.end_section();
    writer.string("serial");
    writer.end_section();
    return writer.payload();
}

TEST(StateIo, FieldsAndNestedSectionsRoundTrip) {
    auto const payload = sample_payload();
    StateReader reader(payload);
    EXPECT_EQ(*reader.begin_section("device", 2), 2u);
    EXPECT_EQ(*reader.u8("a"), 7);
    EXPECT_EQ(*reader.u16("b"), 0x1234);
    EXPECT_TRUE(*reader.boolean("c"));
    EXPECT_EQ(*reader.begin_section("queue0", 1), 1u);
    EXPECT_EQ(*reader.u32("d"), 0xdeadbeefu);
    EXPECT_EQ(*reader.u64("e"), 1ull << 40);
    EXPECT_TRUE(reader.end_section());
    EXPECT_EQ(*reader.string("f", 16), "serial");
    EXPECT_TRUE(reader.end_section());
    EXPECT_TRUE(reader.at_end());
}

TEST(StateIo, SealedBlobOpensToThePayload) {
    auto const payload = sample_payload();
    auto const blob = seal_state(payload);
    auto const opened = open_state(blob);
    ASSERT_TRUE(opened) << opened.error().message();
    EXPECT_TRUE(std::equal(opened->begin(), opened->end(), payload.begin(), payload.end()));
}

TEST(StateIo, TruncatedFieldNamesSectionAndField) {
    auto payload = sample_payload();
    payload.resize(payload.size() - 3); // inside "f"
    StateReader reader(payload);
    auto const device = reader.begin_section("device", 2);
    ASSERT_FALSE(device);
    EXPECT_NE(device.error().message().find("runs past"), std::string::npos) << device.error().message();
}

TEST(StateIo, ReadPastTheSectionEndIsRefused) {
    StateWriter writer;
    writer.begin_section("rtc", 1);
    writer.u8(1);
    writer.end_section();
    writer.u64(99);
    StateReader reader(writer.payload());
    ASSERT_TRUE(reader.begin_section("rtc", 1));
    auto const beyond = reader.u16("index");
    ASSERT_FALSE(beyond);
    EXPECT_NE(beyond.error().message().find("rtc/index: truncated"), std::string::npos) << beyond.error().message();
}

TEST(StateIo, UnreadBytesAtSectionEndAreRefused) {
    StateWriter writer;
    writer.begin_section("uart", 1);
    writer.u32(5);
    writer.end_section();
    StateReader reader(writer.payload());
    ASSERT_TRUE(reader.begin_section("uart", 1));
    ASSERT_TRUE(reader.u8("lcr"));
    auto const ended = reader.end_section();
    ASSERT_FALSE(ended);
    EXPECT_NE(ended.error().message().find("3 bytes left unread"), std::string::npos) << ended.error().message();
}

TEST(StateIo, WrongSectionNameOrVersionIsRefused) {
    auto const payload = sample_payload();
    StateReader wrong_name(payload);
    auto const named = wrong_name.begin_section("uart", 9);
    ASSERT_FALSE(named);
    EXPECT_NE(named.error().message().find("found section 'device'"), std::string::npos) << named.error().message();
    StateReader too_new(payload);
    auto const versioned = too_new.begin_section("device", 1);
    ASSERT_FALSE(versioned);
    EXPECT_NE(versioned.error().message().find("version 2 is not one this kvmm reads"), std::string::npos)
        << versioned.error().message();
}

TEST(StateIo, LengthsAndRangesAreBounded) {
    StateWriter writer;
    writer.bytes(std::vector<std::byte>(100));
    writer.u64(300);
    writer.u8(2);
    StateReader reader(writer.payload());
    auto const too_long = reader.bytes("table", 64);
    ASSERT_FALSE(too_long);
    EXPECT_NE(too_long.error().message().find("length 100 is more than the 64 allowed"), std::string::npos);
    StateReader ranged(writer.payload());
    ASSERT_TRUE(ranged.bytes("table", 100));
    auto const index = ranged.u64_in_range("index", 0, 255);
    ASSERT_FALSE(index);
    EXPECT_NE(index.error().message().find("300 is outside [0, 255]"), std::string::npos);
    auto const flag = ranged.boolean("flag");
    ASSERT_FALSE(flag);
    EXPECT_NE(flag.error().message().find("not a boolean"), std::string::npos);
}

TEST(StateIo, HugeDeclaredLengthAllocatesNothing) {
    StateWriter writer;
    writer.u64(~uint64_t { 0 });
    StateReader reader(writer.payload());
    auto const huge = reader.bytes("blob", ~uint64_t { 0 });
    ASSERT_FALSE(huge);
    EXPECT_NE(huge.error().message().find("truncated"), std::string::npos) << huge.error().message();
}

TEST(StateIo, ContainerRejectsBadMagicVersionLengthAndChecksum) {
    auto const blob = seal_state(sample_payload());
    auto expect_refused = [](std::vector<std::byte> bytes, std::string_view message) {
        auto const opened = open_state(bytes);
        ASSERT_FALSE(opened);
        EXPECT_NE(opened.error().message().find(message), std::string::npos) << opened.error().message();
    };
    auto bad_magic = blob;
    bad_magic[0] = std::byte { 'X' };
    expect_refused(bad_magic, "not a kvmm state file");
    auto bad_version = blob;
    bad_version[8] = std::byte { 9 };
    expect_refused(bad_version, "format version 9");
    auto truncated = blob;
    truncated.pop_back();
    expect_refused(truncated, "payload length");
    auto flipped = blob;
    flipped.back() ^= std::byte { 1 };
    expect_refused(flipped, "checksum");
    expect_refused(std::vector<std::byte>(10), "shorter than the 32-byte header");
}

} // namespace
} // namespace kvmm

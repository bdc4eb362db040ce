#include "devices/virtio/config_space.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <vector>

namespace kvmm::virtio {
namespace {

// A 12-byte structure with distinct bytes 1..12, so every copied byte can be told apart.
std::array<uint8_t, 12> numbered_config() {
    std::array<uint8_t, 12> config {};
    for (size_t i = 0; i < config.size(); ++i)
        config[i] = static_cast<uint8_t>(i + 1);
    return config;
}

std::vector<uint8_t> read_window(std::span<uint8_t const> config, uint64_t offset, size_t length) {
    std::vector<uint8_t> data(length, 0xee); // anything not written stays visible
    read_config_window(config, offset, data);
    return data;
}

TEST(ConfigSpace, ReadsOneTwoFourAndEightByteAccessesInside) {
    auto const config = numbered_config();
    EXPECT_EQ(read_window(config, 0, 1), (std::vector<uint8_t> { 1 }));
    EXPECT_EQ(read_window(config, 2, 2), (std::vector<uint8_t> { 3, 4 }));
    EXPECT_EQ(read_window(config, 4, 4), (std::vector<uint8_t> { 5, 6, 7, 8 }));
    EXPECT_EQ(read_window(config, 4, 8), (std::vector<uint8_t> { 5, 6, 7, 8, 9, 10, 11, 12 }));
    EXPECT_EQ(read_window(config, 3, 4), (std::vector<uint8_t> { 4, 5, 6, 7 })) << "unaligned";
}

TEST(ConfigSpace, ReadEndingExactlyAtTheEndIsWhole) {
    auto const config = numbered_config();
    EXPECT_EQ(read_window(config, 11, 1), (std::vector<uint8_t> { 12 }));
    EXPECT_EQ(read_window(config, 8, 4), (std::vector<uint8_t> { 9, 10, 11, 12 }));
}

TEST(ConfigSpace, BytesPastTheEndReadAsZero) {
    auto const config = numbered_config();
    EXPECT_EQ(read_window(config, 10, 4), (std::vector<uint8_t> { 11, 12, 0, 0 })) << "straddling the end";
    EXPECT_EQ(read_window(config, 8, 8), (std::vector<uint8_t> { 9, 10, 11, 12, 0, 0, 0, 0 }));
    EXPECT_EQ(read_window(config, 12, 2), (std::vector<uint8_t> { 0, 0 })) << "starting at the end";
    EXPECT_EQ(read_window(config, 0xeff, 4), (std::vector<uint8_t> { 0, 0, 0, 0 })) << "far past the end";
    EXPECT_EQ(read_window(config, UINT64_MAX, 8), std::vector<uint8_t>(8, 0)) << "an offset that would overflow";
    EXPECT_EQ(read_window(config, UINT64_MAX - 3, 8), std::vector<uint8_t>(8, 0));
}

TEST(ConfigSpace, EmptyStructureReadsAsZeroEverywhere) {
    EXPECT_EQ(read_window({}, 0, 4), std::vector<uint8_t>(4, 0));
    EXPECT_EQ(read_window({}, 7, 1), std::vector<uint8_t>(1, 0));
}

TEST(ConfigSpace, WriteInsideTheFieldReplacesItsBytes) {
    std::array<uint8_t, 4> field { 1, 2, 3, 4 };
    std::array<uint8_t, 4> const value { 0xa, 0xb, 0xc, 0xd };
    EXPECT_EQ(write_config_field(field, 4, 4, value), 0u);
    EXPECT_EQ(field, value);
    EXPECT_EQ(write_config_field(field, 4, 6, std::span(value).first(2)), 0u) << "a 2-byte write of the upper half";
    EXPECT_EQ(field, (std::array<uint8_t, 4> { 0xa, 0xb, 0xa, 0xb }));
    EXPECT_EQ(write_config_field(field, 4, 7, std::span(value).first(1)), 0u) << "a 1-byte write of the last byte";
    EXPECT_EQ(field, (std::array<uint8_t, 4> { 0xa, 0xb, 0xa, 0xa }));
}

TEST(ConfigSpace, WriteOverlappingTheFieldTakesOnlyItsPartAndCountsTheRest) {
    std::array<uint8_t, 4> field {};
    std::array<uint8_t, 8> const value { 1, 2, 3, 4, 5, 6, 7, 8 };
    // An 8-byte write at 0 covers bytes 0-7; the field is bytes 4-7.
    EXPECT_EQ(write_config_field(field, 4, 0, value), 4u);
    EXPECT_EQ(field, (std::array<uint8_t, 4> { 5, 6, 7, 8 }));
    // A 4-byte write at 6 covers bytes 6-9: two land in the field, two past its end.
    field = {};
    EXPECT_EQ(write_config_field(field, 4, 6, std::span(value).first(4)), 2u);
    EXPECT_EQ(field, (std::array<uint8_t, 4> { 0, 0, 1, 2 }));
    // A 2-byte write at 3 covers bytes 3-4: one before the field, one in it.
    field = {};
    EXPECT_EQ(write_config_field(field, 4, 3, std::span(value).first(2)), 1u);
    EXPECT_EQ(field, (std::array<uint8_t, 4> { 2, 0, 0, 0 }));
}

TEST(ConfigSpace, WriteOutsideTheFieldChangesNothing) {
    std::array<uint8_t, 4> field { 1, 2, 3, 4 };
    std::array<uint8_t, 8> const value { 9, 9, 9, 9, 9, 9, 9, 9 };
    EXPECT_EQ(write_config_field(field, 4, 0, std::span(value).first(4)), 4u) << "just below";
    EXPECT_EQ(write_config_field(field, 4, 8, std::span(value).first(1)), 1u) << "just past the end";
    EXPECT_EQ(write_config_field(field, 4, 0xffc, std::span(value).first(4)), 4u) << "far past the end";
    EXPECT_EQ(write_config_field(field, 4, UINT64_MAX - 2, value), 8u) << "an offset that would overflow";
    EXPECT_EQ(write_config_field(field, 4, UINT64_MAX, std::span(value).first(1)), 1u);
    EXPECT_EQ(field, (std::array<uint8_t, 4> { 1, 2, 3, 4 }));
}

TEST(ConfigSpace, PutStoresLittleEndianFields) {
    std::array<uint8_t, 12> config {};
    put_config<0>(config, uint64_t { 0x0807060504030201 });
    put_config<8>(config, uint16_t { 0x0a09 });
    put_config<10>(config, uint8_t { 0x0b });
    EXPECT_EQ(config, (std::array<uint8_t, 12> { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0 }));
}

} // namespace
} // namespace kvmm::virtio

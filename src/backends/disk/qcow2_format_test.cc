#include "backends/disk/qcow2_format.h"

#include <gtest/gtest.h>

#include <functional>
#include <vector>

namespace kvmm::qcow2 {
namespace {

constexpr uint64_t CLUSTER = 65536;
constexpr uint64_t FILE_SIZE = 4 * CLUSTER;

// A valid 1 GiB image's first cluster: refcount table in cluster 1, L1 in cluster 3.
std::vector<std::byte> valid_first_cluster() {
    Header header;
    header.cluster_bits = 16;
    header.size = 1ull << 30;
    header.l1_size = 2;
    header.l1_table_offset = 3 * CLUSTER;
    header.refcount_table_offset = CLUSTER;
    header.refcount_table_clusters = 1;
    std::vector<std::byte> bytes(CLUSTER);
    encode_header(header, std::span<std::byte, 112>(bytes.data(), 112));
    return bytes;
}

std::string refusal(std::function<void(std::vector<std::byte>&)> const& damage, uint64_t file_size = FILE_SIZE) {
    auto bytes = valid_first_cluster();
    damage(bytes);
    auto parsed = parse_header(bytes, file_size);
    if (parsed)
        return "accepted";
    return parsed.error().message();
}

TEST(Qcow2Header, AValidHeaderParses) {
    auto bytes = valid_first_cluster();
    auto header = MUST(parse_header(bytes, FILE_SIZE));
    EXPECT_EQ(header.size, 1ull << 30);
    EXPECT_EQ(header.cluster_size(), CLUSTER);
    EXPECT_FALSE(header.backing_file.has_value());
}

TEST(Qcow2Header, EachBadFieldIsRefusedByName) {
    struct Case {
        char const* field;
        std::function<void(std::vector<std::byte>&)> damage;
    };
    std::vector<Case> const cases {
        { "magic", [](auto& b) { store_be32(b.data(), 0x12345678); } },
        { "version", [](auto& b) { store_be32(b.data() + 4, 2); } },
        { "cluster_bits", [](auto& b) { store_be32(b.data() + 20, 8); } },
        { "cluster_bits", [](auto& b) { store_be32(b.data() + 20, 22); } },
        { "size", [](auto& b) { store_be64(b.data() + 24, 1ull << 60); } },
        { "l1_size", [](auto& b) { store_be64(b.data() + 24, 1ull << 40); } },
        { "crypt_method", [](auto& b) { store_be32(b.data() + 32, 1); } },
        { "l1_table_offset", [](auto& b) { store_be64(b.data() + 40, 3 * CLUSTER + 8); } },
        { "l1_table_offset", [](auto& b) { store_be64(b.data() + 40, 100 * CLUSTER); } },
        { "l1_table_offset", [](auto& b) { store_be64(b.data() + 40, 0); } },
        { "refcount_table_offset", [](auto& b) { store_be64(b.data() + 48, ~uint64_t { 0xffff }); } },
        { "refcount_table_clusters", [](auto& b) { store_be32(b.data() + 56, 0); } },
        { "refcount_table_clusters", [](auto& b) { store_be32(b.data() + 56, 1000); } },
        { "incompatible_features", [](auto& b) { store_be64(b.data() + 72, 1ull << 40); } },
        { "incompatible_features 'dirty'", [](auto& b) { store_be64(b.data() + 72, INCOMPATIBLE_DIRTY); } },
        { "incompatible_features 'corrupt'", [](auto& b) { store_be64(b.data() + 72, INCOMPATIBLE_CORRUPT); } },
        { "external data", [](auto& b) { store_be64(b.data() + 72, INCOMPATIBLE_EXTERNAL_DATA); } },
        { "extended L2", [](auto& b) { store_be64(b.data() + 72, INCOMPATIBLE_EXTENDED_L2); } },
        { "compression_type", [](auto& b) { b[104] = std::byte { 1 }; } },
        { "refcount_order", [](auto& b) { store_be32(b.data() + 96, 5); } },
        { "header_length", [](auto& b) { store_be32(b.data() + 100, 100); } },
        { "header_length", [](auto& b) { store_be32(b.data() + 100, 113); } },
        { "backing_file_size",
          [](auto& b) {
              store_be64(b.data() + 8, 200);
              store_be32(b.data() + 16, 5000);
          } },
        { "backing_file_offset",
          [](auto& b) {
              store_be64(b.data() + 8, CLUSTER - 2);
              store_be32(b.data() + 16, 10);
          } },
        { "no recorded format",
          [](auto& b) {
              store_be64(b.data() + 8, 200);
              store_be32(b.data() + 16, 4);
              std::memcpy(b.data() + 200, "base", 4);
          } },
        { "extension",
          [](auto& b) {
              store_be32(b.data() + 112, 0x1234);
              store_be32(b.data() + 116, 0xffffff00);
          } },
        { "backing file format",
          [](auto& b) {
              store_be32(b.data() + 112, EXTENSION_BACKING_FORMAT);
              store_be32(b.data() + 116, 4);
              std::memcpy(b.data() + 120, "vmdk", 4);
          } },
    };
    for (auto const& c : cases) {
        std::string const message = refusal(c.damage);
        EXPECT_NE(message.find(c.field), std::string::npos) << c.field << ": " << message;
    }
}

TEST(Qcow2Header, TablesPastTheEndOfTheFileAreRefused) {
    EXPECT_NE(refusal([](auto&) {}, 2 * CLUSTER).find("l1_table_offset"), std::string::npos);
    auto const bytes = valid_first_cluster();
    auto const short_file = parse_header(std::span(bytes).first(60), 60);
    ASSERT_FALSE(short_file.has_value());
    EXPECT_NE(short_file.error().message().find("fewer than a header"), std::string::npos);
}

TEST(Qcow2Header, BackingFileAndFormatAreRead) {
    auto bytes = valid_first_cluster();
    store_be64(bytes.data() + 8, 256);
    store_be32(bytes.data() + 16, 7);
    std::memcpy(bytes.data() + 256, "base.raw", 7);
    store_be32(bytes.data() + 112, EXTENSION_BACKING_FORMAT);
    store_be32(bytes.data() + 116, 5);
    std::memcpy(bytes.data() + 120, "qcow2", 5);
    auto header = MUST(parse_header(bytes, FILE_SIZE));
    EXPECT_EQ(header.backing_file, "base.ra");
    EXPECT_EQ(header.backing_format, BackingFormat::Qcow2);
}

TEST(Qcow2Header, CompressedEntriesDecodeTheirRange) {
    // cluster_bits 16: 54 offset bits, then the count of additional sectors.
    uint64_t const entry = ENTRY_COMPRESSED | (uint64_t { 3 } << 54) | 0x10200;
    auto const range = compressed_range(entry, 16);
    EXPECT_EQ(range.offset, 0x10200u);
    EXPECT_EQ(range.length, 4u * 512);
}

} // namespace
} // namespace kvmm::qcow2

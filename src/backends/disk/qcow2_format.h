// The qcow2 on-disk format (version 3, as QEMU's docs/interop/qcow2.txt
// describes it): the header, its extensions and the table entries, parsed and
// checked without any I/O so that the parser can be fuzzed on its own.
//
// An image file is host-supplied, untrusted input. parse_qcow2_header() checks
// every field against the file's size and against what kvmm implements, and
// refuses with a message that names the field: unknown incompatible features,
// encryption, external data files, extended L2 entries, compression other than
// zlib, refcount widths other than 16 bits, cluster sizes outside 512 B..2 MiB,
// tables outside the file or overlapping the header.
//
// Threading: pure functions.
#pragma once

#include "base/expected.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace kvmm::qcow2 {

inline constexpr uint32_t MAGIC = 0x514649fb; // "QFI\xfb"
inline constexpr uint32_t MIN_CLUSTER_BITS = 9;
inline constexpr uint32_t MAX_CLUSTER_BITS = 21;
inline constexpr uint32_t REFCOUNT_ORDER = 4; // 16-bit refcounts, the only width kvmm writes
inline constexpr uint32_t HEADER_LENGTH_V3 = 104;
// Limits on table sizes (QEMU's own): bound what an image can make kvmm allocate at open.
inline constexpr uint64_t MAX_L1_BYTES = 32ull << 20;
inline constexpr uint64_t MAX_REFCOUNT_TABLE_BYTES = 8ull << 20;
inline constexpr uint32_t MAX_BACKING_NAME_BYTES = 1023;
// The largest virtual size kvmm accepts (QEMU's limit: 32 TiB ... 2^55 host offsets).
inline constexpr uint64_t MAX_VIRTUAL_SIZE = 1ull << 55;
// The deepest backing chain kvmm opens (the image itself not counted).
inline constexpr unsigned MAX_BACKING_DEPTH = 16;

// Incompatible feature bits.
inline constexpr uint64_t INCOMPATIBLE_DIRTY = 1ull << 0;
inline constexpr uint64_t INCOMPATIBLE_CORRUPT = 1ull << 1;
inline constexpr uint64_t INCOMPATIBLE_EXTERNAL_DATA = 1ull << 2;
inline constexpr uint64_t INCOMPATIBLE_COMPRESSION_TYPE = 1ull << 3;
inline constexpr uint64_t INCOMPATIBLE_EXTENDED_L2 = 1ull << 4;
inline constexpr uint64_t COMPATIBLE_LAZY_REFCOUNTS = 1ull << 0;

// Header extension types.
inline constexpr uint32_t EXTENSION_END = 0;
inline constexpr uint32_t EXTENSION_BACKING_FORMAT = 0xe2792aca;
inline constexpr uint32_t EXTENSION_FEATURE_NAMES = 0x6803f857;
inline constexpr uint32_t EXTENSION_EXTERNAL_DATA_FILE = 0x44415441;
inline constexpr uint32_t EXTENSION_ENCRYPTION = 0x0537be77;

// Table entries.
inline constexpr uint64_t OFFSET_MASK = 0x00ff'ffff'ffff'fe00ull; // bits 9..55
inline constexpr uint64_t ENTRY_COPIED = 1ull << 63;              // refcount is exactly 1
inline constexpr uint64_t ENTRY_COMPRESSED = 1ull << 62;          // L2: compressed cluster
inline constexpr uint64_t ENTRY_ZERO = 1ull << 0;                 // L2: reads as zeros
inline constexpr uint64_t L1_RESERVED_MASK = 0x7f00'0000'0000'01ffull;
inline constexpr uint64_t L2_RESERVED_MASK = 0x3f00'0000'0000'01feull;
inline constexpr uint64_t REFCOUNT_TABLE_RESERVED_MASK = 0x1ffull;

enum class BackingFormat { Raw, Qcow2 };

struct Header {
    uint32_t version { 3 };
    uint32_t cluster_bits { 16 };
    uint64_t size { 0 }; // virtual size in bytes
    uint32_t l1_size { 0 };
    uint64_t l1_table_offset { 0 };
    uint64_t refcount_table_offset { 0 };
    uint32_t refcount_table_clusters { 0 };
    uint32_t nb_snapshots { 0 };
    uint64_t snapshots_offset { 0 };
    uint64_t incompatible_features { 0 };
    uint64_t compatible_features { 0 };
    uint64_t autoclear_features { 0 };
    uint32_t refcount_order { REFCOUNT_ORDER };
    uint32_t header_length { HEADER_LENGTH_V3 };
    uint8_t compression_type { 0 };
    std::optional<std::string> backing_file;
    std::optional<BackingFormat> backing_format;

    uint64_t cluster_size() const { return uint64_t { 1 } << cluster_bits; }
    uint64_t l2_entries() const { return cluster_size() / 8; }
    uint64_t refcounts_per_block() const { return cluster_size() / 2; }
};

// Parses and checks the header in `first_cluster` (the file's first bytes: at least the
// header, its extensions and the backing file name, i.e. min(file size, 2 MiB) bytes) of an
// image file of `file_size` bytes.
Expected<Header> parse_header(std::span<std::byte const> first_cluster, uint64_t file_size);

// The header fields of a version 3 header (104 bytes plus the compression type, padded to 112)
// in the on-disk byte order, for writing an image.
void encode_header(Header const& header, std::span<std::byte, 112> out);

// Big-endian helpers for the tables.
uint64_t load_be64(std::byte const* bytes);
uint32_t load_be32(std::byte const* bytes);
uint16_t load_be16(std::byte const* bytes);
void store_be64(std::byte* bytes, uint64_t value);
void store_be32(std::byte* bytes, uint32_t value);
void store_be16(std::byte* bytes, uint16_t value);

// A compressed L2 entry's host range: its offset and the bytes to read (x = 62 - (cluster_bits
// - 8) offset bits, then the additional 512-byte sectors).
struct CompressedRange {
    uint64_t offset { 0 };
    uint64_t length { 0 };
};
CompressedRange compressed_range(uint64_t entry, uint32_t cluster_bits);

} // namespace kvmm::qcow2

#include "backends/disk/qcow2_format.h"

#include <cstring>

namespace kvmm::qcow2 {

uint64_t load_be64(std::byte const* bytes) {
    uint64_t value = 0;
    for (int i = 0; i < 8; ++i)
        value = (value << 8) | static_cast<uint8_t>(bytes[i]);
    return value;
}

uint32_t load_be32(std::byte const* bytes) {
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i)
        value = (value << 8) | static_cast<uint8_t>(bytes[i]);
    return value;
}

uint16_t load_be16(std::byte const* bytes) {
    return static_cast<uint16_t>((static_cast<uint8_t>(bytes[0]) << 8) | static_cast<uint8_t>(bytes[1]));
}

void store_be64(std::byte* bytes, uint64_t value) {
    for (int i = 7; i >= 0; --i, value >>= 8)
        bytes[i] = static_cast<std::byte>(value & 0xff);
}

void store_be32(std::byte* bytes, uint32_t value) {
    for (int i = 3; i >= 0; --i, value >>= 8)
        bytes[i] = static_cast<std::byte>(value & 0xff);
}

void store_be16(std::byte* bytes, uint16_t value) {
    bytes[0] = static_cast<std::byte>(value >> 8);
    bytes[1] = static_cast<std::byte>(value & 0xff);
}

CompressedRange compressed_range(uint64_t entry, uint32_t cluster_bits) {
    uint32_t const offset_bits = 62 - (cluster_bits - 8);
    uint64_t const offset = entry & ((uint64_t { 1 } << offset_bits) - 1);
    uint64_t const additional_sectors = (entry & ~ENTRY_COPIED & ~ENTRY_COMPRESSED) >> offset_bits;
    return { offset, (additional_sectors + 1) * 512 - (offset & 511) };
}

namespace {

// Whether [offset, offset + length) lies within a file of `file_size` bytes, without overflow.
bool within(uint64_t offset, uint64_t length, uint64_t file_size) {
    return offset <= file_size && length <= file_size - offset;
}

Expected<void> check_table(char const* field, uint64_t offset, uint64_t length, Header const& header,
                           uint64_t file_size) {
    if (offset % header.cluster_size() != 0)
        return Error::format("qcow2 header: {} {:#x} is not aligned to a cluster ({} bytes)", field, offset,
                             header.cluster_size());
    if (offset < header.cluster_size())
        return Error::format("qcow2 header: {} {:#x} overlaps the header cluster", field, offset);
    if (!within(offset, length, file_size))
        return Error::format("qcow2 header: {} {:#x} (+{} bytes) lies outside the {}-byte file", field, offset, length,
                             file_size);
    return {};
}

Expected<void> parse_extensions(std::span<std::byte const> bytes, Header& header) {
    uint64_t position = header.header_length;
    // Each extension takes at least 8 bytes, so the walk ends within the buffer.
    while (true) {
        if (position + 8 > bytes.size())
            return Error::format("qcow2 header extension at {:#x}: runs past the header cluster", position);
        uint32_t const type = load_be32(bytes.data() + position);
        uint32_t const length = load_be32(bytes.data() + position + 4);
        position += 8;
        if (type == EXTENSION_END)
            return {};
        uint64_t const padded = (uint64_t { length } + 7) & ~uint64_t { 7 };
        if (padded > bytes.size() - position)
            return Error::format("qcow2 header extension {:#x}: length {} runs past the header cluster", type, length);
        std::byte const* data = bytes.data() + position;
        switch (type) {
        case EXTENSION_BACKING_FORMAT: {
            std::string const name(reinterpret_cast<char const*>(data), length);
            if (name == "raw")
                header.backing_format = BackingFormat::Raw;
            else if (name == "qcow2")
                header.backing_format = BackingFormat::Qcow2;
            else
                return Error::format("qcow2 header: backing file format '{}' is not supported (raw or qcow2)",
                                     name.substr(0, 32));
            break;
        }
        case EXTENSION_EXTERNAL_DATA_FILE:
            return Error("qcow2 header: external data files are not supported");
        case EXTENSION_ENCRYPTION:
            return Error("qcow2 header: encrypted images are not supported");
        default:
            break; // feature names, bitmaps and unknown extensions carry nothing kvmm needs
        }
        position += padded;
    }
}

} // namespace

Expected<Header> parse_header(std::span<std::byte const> bytes, uint64_t file_size) {
    if (bytes.size() < 72)
        return Error::format("qcow2 header: the file holds {} bytes, fewer than a header", bytes.size());
    std::byte const* raw = bytes.data();
    if (load_be32(raw) != MAGIC)
        return Error::format("qcow2 header: magic {:#010x} is not QFI\\xfb", load_be32(raw));
    Header header;
    header.version = load_be32(raw + 4);
    if (header.version != 3)
        return Error::format("qcow2 header: version {} is not supported (3; convert a version 2 image with "
                             "'qemu-img amend -o compat=1.1')",
                             header.version);
    if (bytes.size() < HEADER_LENGTH_V3)
        return Error::format("qcow2 header: the file holds {} bytes, fewer than a version 3 header", bytes.size());
    uint64_t const backing_file_offset = load_be64(raw + 8);
    uint32_t const backing_file_size = load_be32(raw + 16);
    header.cluster_bits = load_be32(raw + 20);
    header.size = load_be64(raw + 24);
    uint32_t const crypt_method = load_be32(raw + 32);
    header.l1_size = load_be32(raw + 36);
    header.l1_table_offset = load_be64(raw + 40);
    header.refcount_table_offset = load_be64(raw + 48);
    header.refcount_table_clusters = load_be32(raw + 56);
    header.nb_snapshots = load_be32(raw + 60);
    header.snapshots_offset = load_be64(raw + 64);
    header.incompatible_features = load_be64(raw + 72);
    header.compatible_features = load_be64(raw + 80);
    header.autoclear_features = load_be64(raw + 88);
    header.refcount_order = load_be32(raw + 96);
    header.header_length = load_be32(raw + 100);

    if (header.cluster_bits < MIN_CLUSTER_BITS || header.cluster_bits > MAX_CLUSTER_BITS)
        return Error::format("qcow2 header: cluster_bits {} is outside {}..{}", header.cluster_bits, MIN_CLUSTER_BITS,
                             MAX_CLUSTER_BITS);
    uint64_t const cluster_size = header.cluster_size();
    if (header.header_length < HEADER_LENGTH_V3 || header.header_length % 8 != 0 ||
        header.header_length > cluster_size || header.header_length > bytes.size())
        return Error::format("qcow2 header: header_length {} is not a multiple of 8 in {}..{}", header.header_length,
                             HEADER_LENGTH_V3, std::min<uint64_t>(cluster_size, bytes.size()));
    if (header.header_length > HEADER_LENGTH_V3)
        header.compression_type = static_cast<uint8_t>(raw[104]);

    uint64_t const known_incompatible = INCOMPATIBLE_DIRTY | INCOMPATIBLE_CORRUPT | INCOMPATIBLE_EXTERNAL_DATA |
                                        INCOMPATIBLE_COMPRESSION_TYPE | INCOMPATIBLE_EXTENDED_L2;
    if (uint64_t const unknown = header.incompatible_features & ~known_incompatible; unknown != 0)
        return Error::format("qcow2 header: incompatible_features has unknown bits {:#x}", unknown);
    if (header.incompatible_features & INCOMPATIBLE_DIRTY)
        return Error("qcow2 header: incompatible_features 'dirty' is set (lazy refcounts were not written back; "
                     "repair with 'qemu-img check -r all')");
    if (header.incompatible_features & INCOMPATIBLE_CORRUPT)
        return Error("qcow2 header: incompatible_features 'corrupt' is set (repair with 'qemu-img check -r all')");
    if (header.incompatible_features & INCOMPATIBLE_EXTERNAL_DATA)
        return Error("qcow2 header: incompatible_features 'external data file' is not supported");
    if (header.incompatible_features & INCOMPATIBLE_EXTENDED_L2)
        return Error("qcow2 header: incompatible_features 'extended L2 entries' is not supported");
    bool const compression_bit = (header.incompatible_features & INCOMPATIBLE_COMPRESSION_TYPE) != 0;
    if (header.compression_type != 0 || compression_bit)
        return Error::format("qcow2 header: compression_type {} is not supported (zlib, 0)", header.compression_type);
    if (crypt_method != 0)
        return Error::format("qcow2 header: crypt_method {} is not supported (encryption)", crypt_method);
    if (header.refcount_order != REFCOUNT_ORDER)
        return Error::format("qcow2 header: refcount_order {} is not supported (4: 16-bit refcounts)",
                             header.refcount_order);

    if (header.size > MAX_VIRTUAL_SIZE)
        return Error::format("qcow2 header: size {} is larger than {}", header.size, MAX_VIRTUAL_SIZE);
    uint64_t const bytes_per_l1_entry = cluster_size * header.l2_entries();
    uint64_t const needed_l1 = (header.size + bytes_per_l1_entry - 1) / bytes_per_l1_entry;
    if (uint64_t { header.l1_size } * 8 > MAX_L1_BYTES)
        return Error::format("qcow2 header: l1_size {} is larger than {} entries", header.l1_size, MAX_L1_BYTES / 8);
    if (header.l1_size < needed_l1)
        return Error::format("qcow2 header: l1_size {} cannot map size {} (needs {})", header.l1_size, header.size,
                             needed_l1);
    if (header.l1_size > 0)
        TRY(check_table("l1_table_offset", header.l1_table_offset, uint64_t { header.l1_size } * 8, header, file_size));
    uint64_t const refcount_table_bytes = uint64_t { header.refcount_table_clusters } * cluster_size;
    if (header.refcount_table_clusters == 0 || refcount_table_bytes > MAX_REFCOUNT_TABLE_BYTES)
        return Error::format("qcow2 header: refcount_table_clusters {} is outside 1..{}",
                             header.refcount_table_clusters, MAX_REFCOUNT_TABLE_BYTES / cluster_size);
    TRY(check_table("refcount_table_offset", header.refcount_table_offset, refcount_table_bytes, header, file_size));
    if (header.nb_snapshots > 0)
        TRY(check_table("snapshots_offset", header.snapshots_offset, 8, header, file_size));

    if (backing_file_offset != 0) {
        if (backing_file_size == 0 || backing_file_size > MAX_BACKING_NAME_BYTES)
            return Error::format("qcow2 header: backing_file_size {} is outside 1..{}", backing_file_size,
                                 MAX_BACKING_NAME_BYTES);
        if (backing_file_offset < header.header_length ||
            !within(backing_file_offset, backing_file_size, std::min<uint64_t>(cluster_size, bytes.size())))
            return Error::format("qcow2 header: backing_file_offset {:#x} is outside the header cluster",
                                 backing_file_offset);
        std::string name(reinterpret_cast<char const*>(raw + backing_file_offset), backing_file_size);
        if (name.find('\0') != std::string::npos)
            return Error("qcow2 header: the backing file name holds a NUL byte");
        header.backing_file = std::move(name);
    }
    TRY(parse_extensions(bytes.first(std::min<uint64_t>(cluster_size, bytes.size())), header));
    if (header.backing_file && !header.backing_format)
        return Error::format("qcow2 header: backing file '{}' has no recorded format (kvmm never probes a format; "
                             "record it with 'qemu-img rebase -u -F raw|qcow2')",
                             *header.backing_file);
    if (!header.backing_file)
        header.backing_format.reset();
    return header;
}

void encode_header(Header const& header, std::span<std::byte, 112> out) {
    std::memset(out.data(), 0, out.size());
    std::byte* raw = out.data();
    store_be32(raw, MAGIC);
    store_be32(raw + 4, 3);
    store_be32(raw + 20, header.cluster_bits);
    store_be64(raw + 24, header.size);
    store_be32(raw + 36, header.l1_size);
    store_be64(raw + 40, header.l1_table_offset);
    store_be64(raw + 48, header.refcount_table_offset);
    store_be32(raw + 56, header.refcount_table_clusters);
    store_be32(raw + 60, header.nb_snapshots);
    store_be64(raw + 64, header.snapshots_offset);
    store_be64(raw + 72, header.incompatible_features);
    store_be64(raw + 80, header.compatible_features);
    store_be64(raw + 88, header.autoclear_features);
    store_be32(raw + 96, header.refcount_order);
    store_be32(raw + 100, 112);
    raw[104] = static_cast<std::byte>(header.compression_type);
}

} // namespace kvmm::qcow2

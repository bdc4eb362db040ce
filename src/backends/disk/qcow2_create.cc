// qcow2::Image::create and the iovec helpers of the qcow2 layer (qcow2_image.h).
#include "backends/disk/disk_io.h"
#include "backends/disk/qcow2_image.h"
#include "base/unique_fd.h"

#include <fcntl.h>

#include <algorithm>
#include <cstring>

namespace kvmm::qcow2 {

namespace {

// Walks `buffers` from byte `position`, calling visit(segment_pointer, bytes) for `length` bytes.
template <typename Visit>
void walk_buffers(std::span<iovec const> buffers, uint64_t position, uint64_t length, Visit visit) {
    for (auto const& buffer : buffers) {
        if (length == 0)
            return;
        if (position >= buffer.iov_len) {
            position -= buffer.iov_len;
            continue;
        }
        uint64_t const take = std::min<uint64_t>(buffer.iov_len - position, length);
        visit(static_cast<std::byte*>(buffer.iov_base) + position, take);
        position = 0;
        length -= take;
    }
}

int32_t write_all(int fd, std::vector<std::byte> const& bytes) {
    iovec const buffer { const_cast<std::byte*>(bytes.data()), bytes.size() };
    int32_t const result = disk_io::write(fd, 0, std::span(&buffer, 1), false);
    return result < 0 ? result : 0;
}

Expected<void> as_expected(int32_t result, std::string_view what) {
    if (result < 0)
        return Error::from_errno(what, -result);
    return {};
}

} // namespace

void copy_to_buffers(std::span<iovec const> buffers, uint64_t position, std::byte const* data, uint64_t length) {
    walk_buffers(buffers, position, length, [&](std::byte* segment, uint64_t bytes) {
        std::memcpy(segment, data, bytes);
        data += bytes;
    });
}

void copy_from_buffers(std::span<iovec const> buffers, uint64_t position, std::byte* data, uint64_t length) {
    walk_buffers(buffers, position, length, [&](std::byte* segment, uint64_t bytes) {
        std::memcpy(data, segment, bytes);
        data += bytes;
    });
}

void zero_buffers(std::span<iovec const> buffers, uint64_t position, uint64_t length) {
    walk_buffers(buffers, position, length, [](std::byte* segment, uint64_t bytes) { std::memset(segment, 0, bytes); });
}

void slice_buffers(std::span<iovec const> buffers, uint64_t position, uint64_t length, std::vector<iovec>& out) {
    walk_buffers(buffers, position, length, [&](std::byte* segment, uint64_t bytes) {
        out.push_back({ segment, bytes });
    });
}

Expected<void> Image::create(std::string const& path, uint64_t size, CreateOptions const& options) {
    if (options.cluster_bits < MIN_CLUSTER_BITS || options.cluster_bits > MAX_CLUSTER_BITS)
        return Error::format("cluster_bits {} is outside {}..{}", options.cluster_bits, MIN_CLUSTER_BITS,
                             MAX_CLUSTER_BITS);
    if (size > MAX_VIRTUAL_SIZE)
        return Error::format("size {} is larger than {}", size, MAX_VIRTUAL_SIZE);
    Header header;
    header.cluster_bits = options.cluster_bits;
    header.size = size;
    uint64_t const cluster = header.cluster_size();
    uint64_t const per_l2 = cluster * header.l2_entries();
    header.l1_size = static_cast<uint32_t>(std::max<uint64_t>(1, (size + per_l2 - 1) / per_l2));
    uint64_t const l1_clusters = (uint64_t { header.l1_size } * 8 + cluster - 1) / cluster;
    if (uint64_t { header.l1_size } * 8 > MAX_L1_BYTES || 3 + l1_clusters > header.refcounts_per_block())
        return Error::format("size {} needs larger clusters than {} bytes", size, cluster);
    header.refcount_table_offset = cluster;
    header.refcount_table_clusters = 1;
    header.l1_table_offset = 3 * cluster;

    std::vector<std::byte> bytes((3 + l1_clusters) * cluster);
    encode_header(header, std::span<std::byte, 112>(bytes.data(), 112));
    uint64_t position = 112;
    if (options.backing_file) {
        std::string const format = options.backing_format == BackingFormat::Qcow2 ? "qcow2" : "raw";
        store_be32(bytes.data() + position, EXTENSION_BACKING_FORMAT);
        store_be32(bytes.data() + position + 4, static_cast<uint32_t>(format.size()));
        std::memcpy(bytes.data() + position + 8, format.data(), format.size());
        position += 8 + ((format.size() + 7) & ~size_t { 7 });
    }
    position += 8; // the end-of-extensions marker: type 0, length 0
    if (options.backing_file) {
        std::string const& name = *options.backing_file;
        if (name.empty() || name.size() > MAX_BACKING_NAME_BYTES || position + name.size() > cluster)
            return Error::format("backing file name '{}' does not fit the header cluster", name);
        store_be64(bytes.data() + 8, position);
        store_be32(bytes.data() + 16, static_cast<uint32_t>(name.size()));
        std::memcpy(bytes.data() + position, name.data(), name.size());
    }
    store_be64(bytes.data() + cluster, 2 * cluster); // refcount table entry 0: the block in cluster 2
    for (uint64_t i = 0; i < 3 + l1_clusters; ++i)
        store_be16(bytes.data() + 2 * cluster + i * 2, 1);

    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot create '{}'", path));
    TRY(as_expected(write_all(fd.get(), bytes), fmt::format("writing '{}'", path)));
    TRY(as_expected(disk_io::flush(fd.get()), fmt::format("fdatasync '{}'", path)));
    return {};
}

} // namespace kvmm::qcow2

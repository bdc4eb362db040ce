#include "backends/disk/qcow2_file.h"

#include "base/unique_fd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace kvmm::qcow2 {

namespace {

// The header, its extensions and the backing name lie in the first cluster, at most 2 MiB.
constexpr uint64_t MAX_HEADER_READ = uint64_t { 1 } << MAX_CLUSTER_BITS;

Expected<void> write_whole(int fd, std::vector<std::byte> const& bytes, std::string const& path) {
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t const written = ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return Error::from_errno(fmt::format("writing '{}'", path));
        done += static_cast<size_t>(written);
    }
    return {};
}

Expected<std::vector<std::byte>> image_bytes(uint64_t size, CreateOptions const& options) {
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
    // Cluster 0: header; 1: refcount table; 2: its one refcount block; 3..: the L1 table.
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
    return bytes;
}

} // namespace

Expected<void> create_image(std::string const& path, uint64_t size, CreateOptions const& options) {
    auto const bytes = TRY(image_bytes(size, options));
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot create '{}'", path));
    auto written = write_whole(fd.get(), bytes, path);
    if (written && ::fdatasync(fd.get()) != 0)
        written = Error::from_errno(fmt::format("fdatasync '{}'", path));
    if (!written) {
        ::unlink(path.c_str());
        return written.error();
    }
    return {};
}

Expected<FileInfo> read_file_info(std::string const& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot open '{}'", path));
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("fstat '{}'", path));
    if (!S_ISREG(status.st_mode))
        return Error::format("'{}' is not a regular file", path);
    FileInfo info;
    info.file_size = static_cast<uint64_t>(status.st_size);
    info.allocated_bytes = static_cast<uint64_t>(status.st_blocks) * 512;
    std::vector<std::byte> first(std::min(info.file_size, MAX_HEADER_READ));
    size_t done = 0;
    while (done < first.size()) {
        ssize_t const got = ::pread(fd.get(), first.data() + done, first.size() - done, static_cast<off_t>(done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return Error::from_errno(fmt::format("reading '{}'", path));
        if (got == 0)
            break;
        done += static_cast<size_t>(got);
    }
    first.resize(done);
    info.header = TRY(parse_header(first, info.file_size).with_context(fmt::format("'{}'", path)));
    return info;
}

bool has_qcow2_magic(std::string const& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    std::byte magic[4] {};
    return fd.is_valid() && ::pread(fd.get(), magic, sizeof(magic), 0) == static_cast<ssize_t>(sizeof(magic)) &&
           load_be32(magic) == MAGIC;
}

} // namespace kvmm::qcow2

// qcow2::Image: the qcow2 v3 translation layer behind a DiskImage: guest
// offsets to host offsets, zeros or the backing file; cluster allocation,
// refcounts, zero clusters, discard, compressed clusters (read), backing
// chains. Written in the project: Debian has no library that does this for a
// VMM (QEMU's block layer is not a library; libguestfs and qemu-img drive a
// QEMU process), and the format is small enough to check field by field.
//
// Metadata (L1 in memory; L2 tables and refcount blocks in bounded LRU caches,
// CACHE_BYTES each) is read and written synchronously with pread/pwrite on the
// caller's thread - the event loop. Each request does a bounded amount of it:
// at most a few tables per cluster it touches, plus one write-back of dirty
// metadata when a cache must evict a dirty table.
//
// Crash consistency (lazy_refcounts off; `qemu-img check` must find a crashed
// image consistent, leaked clusters allowed): metadata is write-back cached
// and written by writeback() in an order with fdatasync barriers:
//   1. dirty refcount blocks, fdatasync; refcount table entries for new
//      blocks, fdatasync (a block is durable before the table points to it);
//   2. this barrier also makes every data write done so far durable, so an L2
//      entry never reaches the disk before its data or its refcount;
//   3. dirty L2 tables; if L1 entries changed: fdatasync, then the L1 entries;
//   4. fdatasync; only now are clusters that the written tables stopped
//      referencing given back (refcount decremented): a crash before leaks them.
// Growing the refcount table is done at once: new blocks and table, fdatasync,
// header, fdatasync. Data is written (in place or, for a new cluster, the
// whole cluster with the old content around the new bytes) before the L2 entry
// in the cache changes, so readers of the cache never see a cluster whose data
// is not there.
//
// Hostile images: L1 and refcount table entries are checked at open (aligned,
// inside the file, not on the header or tables); an L2 entry is checked when it
// is used, and a bad one fails that request with -EIO. A data cluster is never
// written where kvmm knows metadata to be, and allocation skips such clusters
// even when their refcount says free.
//
// Threading: one thread (the owning device's event loop).
#pragma once

#include "backends/disk/qcow2_file.h"
#include "backends/disk/qcow2_format.h"
#include "base/expected.h"

#include <sys/uio.h>

#include <cstdint>
#include <list>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace kvmm {
class DiskImage;
}

namespace kvmm::qcow2 {

// Test hook (crash simulation): after `count` more metadata or data system calls that change
// the file (pwrite, fdatasync, ftruncate, fallocate) every further one fails with EIO, as if the
// machine stopped there. A negative count switches the hook off. Returns the calls made since
// the hook was last set.
int64_t fail_file_changes_after_for_testing(int64_t count);

// The files already in a chain (st_dev, st_ino) and its depth, so that loops and over-deep
// chains are refused while it is opened.
struct ChainContext {
    std::set<std::pair<uint64_t, uint64_t>> files;
    unsigned depth { 0 };
};

enum class ExtentKind { Unallocated, Zero, Data, Compressed };

// A guest range that maps the same way: Data extents are contiguous on the host.
struct Extent {
    ExtentKind kind { ExtentKind::Unallocated };
    uint64_t length { 0 };
    uint64_t host_offset { 0 }; // Data: host offset of the first byte
    bool writable_in_place { false };
};

class Image {
public:
    // Opens the qcow2 metadata of the open file `fd` (owned by the caller's DiskImage, which
    // outlives this object) and its backing chain.
    static Expected<std::unique_ptr<Image>> open(int fd, std::string path, bool read_only, uint64_t file_size,
                                                 ChainContext& chain);
    // Writes a new, empty image of `size` bytes at `path` (which must not exist).
    // (qcow2_file.h's create_image, kept here for the layer's users.)
    static Expected<void> create(std::string const& path, uint64_t size, CreateOptions const& options) {
        return create_image(path, size, options);
    }
    ~Image();
    Image(Image const&) = delete;
    Image& operator=(Image const&) = delete;

    uint64_t virtual_size() const { return m_header.size; }
    uint64_t cluster_size() const { return m_cluster_size; }
    Header const& header() const { return m_header; }
    bool has_backing() const { return m_backing != nullptr; }

    // How [offset, offset + length) starts: the returned extent has at least one byte and stays
    // within one L2 table. -EIO for a corrupt entry.
    Expected<Extent> map(uint64_t offset, uint64_t length);

    // Whole requests, synchronously; results as disk_io's (bytes or -errno). Reads past the
    // virtual size are short; writes there fail with -EINVAL.
    int32_t read(uint64_t offset, std::span<iovec const> buffers);
    int32_t write(uint64_t offset, std::span<iovec const> buffers);
    // Reads a non-Data extent's bytes (zeros, backing file, compressed cluster) into `buffers`.
    int32_t read_extent(Extent const& extent, uint64_t offset, std::span<iovec const> buffers);
    // Writes where map() says Data and writable in place are done by the caller (an engine);
    // this is the rest: allocation with copy-on-write of the cluster's old content.
    int32_t write_allocating(uint64_t offset, std::span<iovec const> buffers);
    // Whole clusters become zero clusters (their host clusters are freed); partial clusters at
    // the ends are written with zeros.
    int32_t write_zeroes(uint64_t offset, uint64_t length);
    // Whole clusters are deallocated (zero clusters over a backing file, so the backing data does
    // not show through); partial clusters are left as they are.
    int32_t discard(uint64_t offset, uint64_t length);
    // Writes dirty metadata back (see the header comment) and fdatasyncs.
    int32_t flush();
    bool has_dirty_metadata() const;

private:
    struct Table {
        uint64_t offset { 0 };
        std::vector<std::byte> bytes;
        bool dirty { false };
    };
    class TableCache;

    Image(int fd, std::string path, bool read_only, Header header, uint64_t file_size);

    Expected<void> load_tables(ChainContext& chain);
    Expected<Table*> l2_table(uint64_t l1_index, bool allocate);
    Expected<Table*> refcount_block(uint64_t block_index);
    Expected<uint16_t> refcount(uint64_t cluster);
    Expected<void> set_refcount(uint64_t cluster, uint16_t value);
    // `count` contiguous free clusters starting at a multiple of `alignment` clusters.
    Expected<uint64_t> allocate_clusters(uint64_t count, uint64_t alignment = 1);
    Expected<void> create_refcount_block(uint64_t block_index, uint64_t cluster);
    Expected<void> grow_refcount_table(uint64_t needed_entries);
    Expected<void> writeback();
    Expected<void> set_l2_entry(uint64_t guest_offset, uint64_t entry);
    Expected<uint64_t> l2_entry(uint64_t guest_offset);
    Expected<void> check_data_cluster(uint64_t host_offset) const;
    Expected<void> allocate_and_write(uint64_t cluster_offset, uint64_t skip, std::span<iovec const> buffers,
                                      uint64_t buffer_offset, uint64_t length);
    // `count` whole clusters from guest_offset (cluster-aligned, within one L2 table), replaced
    // entirely by the buffers' bytes from buffer_offset: one allocation, one write.
    Expected<void> allocate_and_write_clusters(uint64_t guest_offset, uint64_t count, std::span<iovec const> buffers,
                                               uint64_t buffer_offset);
    int32_t read_backing(uint64_t offset, std::span<iovec const> buffers);
    Expected<void> read_compressed(uint64_t entry, std::span<std::byte> cluster);
    void release_later(uint64_t entry);

    int m_fd { -1 };
    std::string m_path;
    bool m_read_only { false };
    Header m_header;
    uint64_t m_cluster_size { 0 };
    uint64_t m_end_cluster { 0 }; // first cluster past the file and every allocation
    uint64_t m_free_cursor { 0 }; // no free cluster below this one

    std::vector<uint64_t> m_l1;
    std::set<uint64_t> m_dirty_l1; // L1 indices changed in memory only
    std::vector<uint64_t> m_refcount_table;
    std::set<uint64_t> m_dirty_refcount_table;
    std::unique_ptr<TableCache> m_l2_cache;
    std::unique_ptr<TableCache> m_refcount_cache;
    std::unordered_set<uint64_t> m_metadata_clusters;
    std::vector<uint64_t> m_pending_releases; // host clusters unreferenced by dirty tables
    std::unique_ptr<DiskImage> m_backing;
    std::vector<std::byte> m_scratch; // one cluster, for copy-on-write
};

// Helpers over iovec arrays, shared by the layer and its engine.
// Copies `length` bytes between `data` and `buffers` starting `position` bytes into them.
void copy_to_buffers(std::span<iovec const> buffers, uint64_t position, std::byte const* data, uint64_t length);
void copy_from_buffers(std::span<iovec const> buffers, uint64_t position, std::byte* data, uint64_t length);
void zero_buffers(std::span<iovec const> buffers, uint64_t position, uint64_t length);
// Appends to `out` the iovecs for [position, position + length) of `buffers`.
void slice_buffers(std::span<iovec const> buffers, uint64_t position, uint64_t length, std::vector<iovec>& out);

} // namespace kvmm::qcow2

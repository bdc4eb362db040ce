#include "backends/disk/qcow2_image.h"

#include "backends/disk/disk_image.h"
#include "backends/disk/disk_io.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace kvmm::qcow2 {

namespace {

std::atomic<int64_t> g_changes_left { -1 };
std::atomic<int64_t> g_changes_made { 0 };

// Counts a system call that changes the file; false when the crash-simulation hook stops it.
bool change_allowed() {
    g_changes_made.fetch_add(1);
    int64_t left = g_changes_left.load();
    if (left < 0)
        return true;
    if (left == 0)
        return false;
    g_changes_left.store(left - 1);
    return true;
}

int32_t pwrite_all(int fd, uint64_t offset, std::byte const* data, uint64_t length) {
    if (!change_allowed())
        return -EIO;
    iovec const buffer { const_cast<std::byte*>(data), length };
    int32_t const result = disk_io::write(fd, offset, std::span(&buffer, 1), false);
    return result < 0 ? result : 0;
}

int32_t pwrite_buffers(int fd, uint64_t offset, std::span<iovec const> buffers) {
    if (!change_allowed())
        return -EIO;
    int32_t const result = disk_io::write(fd, offset, buffers, false);
    return result < 0 ? result : 0;
}

int32_t sync_file(int fd) {
    if (!change_allowed())
        return -EIO;
    return disk_io::flush(fd);
}

Expected<void> as_expected(int32_t result, std::string_view what) {
    if (result < 0)
        return Error::from_errno(what, -result);
    return {};
}

Expected<std::vector<std::byte>> read_exactly(int fd, uint64_t offset, uint64_t length, std::string_view what) {
    std::vector<std::byte> bytes(length);
    iovec const buffer { bytes.data(), length };
    int32_t const result = disk_io::read(fd, offset, std::span(&buffer, 1));
    if (result < 0)
        return Error::from_errno(fmt::format("reading {} at {:#x}", what, offset), -result);
    if (static_cast<uint64_t>(result) != length)
        return Error::format("{} at {:#x} (+{} bytes) lies past the end of the file", what, offset, length);
    return bytes;
}

int32_t to_result(Error const& error) { return error.error_number() != 0 ? -error.error_number() : -EIO; }

uint64_t total_length(std::span<iovec const> buffers) {
    uint64_t total = 0;
    for (auto const& buffer : buffers)
        total += buffer.iov_len;
    return total;
}

} // namespace

int64_t fail_file_changes_after_for_testing(int64_t count) {
    g_changes_left.store(count);
    return g_changes_made.exchange(0);
}

// A bounded LRU cache of cluster-sized tables, keyed by host offset. Entries live in a list, so
// a Table* stays valid until that table is evicted, which happens only in insert() on the same
// cache. Only clean tables are evicted: when every table is dirty insert() returns nullptr and
// the image writes its metadata back first.
class Image::TableCache {
public:
    explicit TableCache(size_t capacity) : m_capacity(capacity) {}

    Table* find(uint64_t offset) {
        // The hit path of every request: the table found last is at the front of the list
        // already, so a repeated hit needs neither the hash lookup nor the splice.
        if (m_last != nullptr && m_last->offset == offset)
            return m_last;
        auto found = m_index.find(offset);
        if (found == m_index.end())
            return nullptr;
        m_entries.splice(m_entries.begin(), m_entries, found->second);
        m_last = &*found->second;
        return m_last;
    }

    Table* insert(uint64_t offset, std::vector<std::byte> bytes, bool dirty) {
        if (m_entries.size() >= m_capacity) {
            auto victim = std::find_if(m_entries.rbegin(), m_entries.rend(), [](Table const& t) { return !t.dirty; });
            if (victim == m_entries.rend())
                return nullptr;
            m_index.erase(victim->offset);
            m_entries.erase(std::next(victim).base());
        }
        m_entries.push_front(Table { offset, std::move(bytes), dirty });
        m_index[offset] = m_entries.begin();
        m_last = &m_entries.front(); // also forgets an evicted one
        return m_last;
    }

    template <typename Visit>
    Expected<void> for_each_dirty(Visit visit) {
        for (auto& table : m_entries)
            if (table.dirty) {
                TRY(visit(table));
                table.dirty = false;
            }
        return {};
    }

    bool any_dirty() const {
        return std::any_of(m_entries.begin(), m_entries.end(), [](Table const& t) { return t.dirty; });
    }

private:
    size_t m_capacity;
    std::list<Table> m_entries; // most recently used first
    std::unordered_map<uint64_t, std::list<Table>::iterator> m_index;
    Table* m_last { nullptr }; // the front entry, when find() or insert() put it there
};

namespace {
// Memory per cache: 4 MiB, and never fewer than 4 tables (2 MiB clusters: 8 MiB).
constexpr uint64_t CACHE_BYTES = 4ull << 20;
constexpr size_t MIN_CACHED_TABLES = 4;
// The largest alignment of a run of new clusters: x86-64's PMD size, the largest page-cache folio.
constexpr uint64_t LARGEST_ALIGNED_RUN = 2ull << 20;
} // namespace

Image::Image(int fd, std::string path, bool read_only, Header header, uint64_t file_size)
    : m_fd(fd), m_path(std::move(path)), m_read_only(read_only), m_header(std::move(header)),
      m_cluster_size(m_header.cluster_size()), m_end_cluster((file_size + m_cluster_size - 1) / m_cluster_size),
      m_l2_cache(std::make_unique<TableCache>(std::max<size_t>(MIN_CACHED_TABLES, CACHE_BYTES / m_cluster_size))),
      m_refcount_cache(std::make_unique<TableCache>(std::max<size_t>(MIN_CACHED_TABLES, CACHE_BYTES / m_cluster_size))),
      m_scratch(m_cluster_size) {}

Image::~Image() {
    if (!m_read_only && has_dirty_metadata())
        (void)flush(); // a clean close leaves nothing leaked; errors were the last request's to report
}

Expected<std::unique_ptr<Image>> Image::open(int fd, std::string path, bool read_only, uint64_t file_size,
                                             ChainContext& chain) {
    uint64_t const first_bytes = std::min<uint64_t>(file_size, uint64_t { 1 } << MAX_CLUSTER_BITS);
    auto bytes = TRY(read_exactly(fd, 0, first_bytes, "the qcow2 header").with_context(path));
    auto header = TRY(parse_header(bytes, file_size).with_context(path));
    if (!read_only && header.nb_snapshots > 0)
        return Error::format("{}: the image has {} internal snapshots; kvmm opens such images read-only only", path,
                             header.nb_snapshots);
    std::unique_ptr<Image> image(new Image(fd, path, read_only, std::move(header), file_size));
    TRY(image->load_tables(chain).with_context(path));
    if (!read_only && image->m_header.autoclear_features != 0) {
        // The spec's rule for writers: clear the autoclear bits kvmm does not maintain (bitmaps).
        std::array<std::byte, 8> zeros {};
        TRY(as_expected(pwrite_all(fd, 88, zeros.data(), zeros.size()), "clearing autoclear_features"));
        TRY(as_expected(sync_file(fd), "fdatasync"));
        image->m_header.autoclear_features = 0;
    }
    return image;
}

Expected<void> Image::load_tables(ChainContext& chain) {
    uint64_t const cluster = m_cluster_size;
    uint64_t const file_bytes = m_end_cluster * cluster;
    auto claim = [&](uint64_t offset, uint64_t length, std::string_view what) -> Expected<void> {
        for (uint64_t index = offset / cluster; index < (offset + length + cluster - 1) / cluster; ++index)
            if (!m_metadata_clusters.insert(index).second)
                return Error::format("{} at {:#x} overlaps other metadata", what, index * cluster);
        return {};
    };
    TRY(claim(0, cluster, "the header"));
    TRY(claim(m_header.l1_table_offset, uint64_t { m_header.l1_size } * 8, "l1_table_offset"));
    uint64_t const refcount_table_bytes = uint64_t { m_header.refcount_table_clusters } * cluster;
    TRY(claim(m_header.refcount_table_offset, refcount_table_bytes, "refcount_table_offset"));

    auto check_entry = [&](char const* table, uint64_t index, uint64_t entry, uint64_t reserved) -> Expected<void> {
        if (entry & reserved)
            return Error::format("{} entry {}: reserved bits {:#x} are set", table, index, entry & reserved);
        uint64_t const offset = entry & OFFSET_MASK;
        if (offset == 0)
            return {};
        if (offset % cluster != 0)
            return Error::format("{} entry {}: offset {:#x} is not cluster-aligned", table, index, offset);
        if (offset > file_bytes - cluster)
            return Error::format("{} entry {}: offset {:#x} lies outside the {}-byte file", table, index, offset,
                                 file_bytes);
        return claim(offset, cluster, fmt::format("{} entry {}: table", table, index));
    };

    if (m_header.l1_size > 0) {
        auto l1 = TRY(read_exactly(m_fd, m_header.l1_table_offset, uint64_t { m_header.l1_size } * 8, "the L1 table"));
        m_l1.resize(m_header.l1_size);
        for (uint64_t i = 0; i < m_l1.size(); ++i) {
            m_l1[i] = load_be64(l1.data() + i * 8);
            TRY(check_entry("L1", i, m_l1[i], L1_RESERVED_MASK));
        }
    }
    auto refcounts =
        TRY(read_exactly(m_fd, m_header.refcount_table_offset, refcount_table_bytes, "the refcount table"));
    m_refcount_table.resize(refcount_table_bytes / 8);
    for (uint64_t i = 0; i < m_refcount_table.size(); ++i) {
        m_refcount_table[i] = load_be64(refcounts.data() + i * 8);
        TRY(check_entry("refcount table", i, m_refcount_table[i], REFCOUNT_TABLE_RESERVED_MASK));
    }

    if (m_header.backing_file) {
        if (chain.depth + 1 > MAX_BACKING_DEPTH)
            return Error::format("the backing chain is deeper than {} images", MAX_BACKING_DEPTH);
        std::filesystem::path backing(*m_header.backing_file);
        if (backing.is_relative())
            backing = std::filesystem::path(m_path).parent_path() / backing;
        auto const format = *m_header.backing_format == BackingFormat::Qcow2 ? DiskFormat::Qcow2 : DiskFormat::Raw;
        ++chain.depth;
        auto opened = TRY(DiskImage::open_in_chain(backing.string(), true, format, chain).with_context("backing file"));
        m_backing = std::make_unique<DiskImage>(std::move(opened));
    }
    return {};
}

bool Image::has_dirty_metadata() const {
    return !m_dirty_l1.empty() || !m_dirty_refcount_table.empty() || !m_pending_releases.empty() ||
           m_l2_cache->any_dirty() || m_refcount_cache->any_dirty();
}

Expected<void> Image::check_data_cluster(uint64_t host_offset) const {
    if (host_offset % m_cluster_size != 0)
        return Error(fmt::format("{}: L2 entry: data offset {:#x} is not cluster-aligned", m_path, host_offset), EIO);
    if (m_metadata_clusters.contains(host_offset / m_cluster_size))
        return Error(fmt::format("{}: L2 entry: data offset {:#x} points into metadata", m_path, host_offset), EIO);
    return {};
}

Expected<Image::Table*> Image::l2_table(uint64_t l1_index, bool allocate) {
    uint64_t const entry = m_l1[l1_index];
    uint64_t const offset = entry & OFFSET_MASK;
    if (offset == 0) {
        if (!allocate)
            return static_cast<Table*>(nullptr);
        uint64_t const table_offset = TRY(allocate_clusters(1));
        m_metadata_clusters.insert(table_offset / m_cluster_size);
        Table* table = m_l2_cache->insert(table_offset, std::vector<std::byte>(m_cluster_size), true);
        if (table == nullptr) {
            TRY(writeback());
            table = m_l2_cache->insert(table_offset, std::vector<std::byte>(m_cluster_size), true);
        }
        m_l1[l1_index] = table_offset | ENTRY_COPIED;
        m_dirty_l1.insert(l1_index);
        return table;
    }
    if (allocate && !(entry & ENTRY_COPIED))
        return Error(fmt::format("{}: L1 entry {}: the L2 table is shared (no COPIED flag)", m_path, l1_index), EIO);
    if (Table* cached = m_l2_cache->find(offset))
        return cached;
    auto bytes = TRY(read_exactly(m_fd, offset, m_cluster_size, "an L2 table"));
    Table* table = m_l2_cache->insert(offset, bytes, false);
    if (table == nullptr) {
        TRY(writeback());
        table = m_l2_cache->insert(offset, std::move(bytes), false);
    }
    return table;
}

Expected<Image::Table*> Image::refcount_block(uint64_t block_index) {
    uint64_t const offset = m_refcount_table[block_index] & OFFSET_MASK;
    if (Table* cached = m_refcount_cache->find(offset))
        return cached;
    auto bytes = TRY(read_exactly(m_fd, offset, m_cluster_size, "a refcount block"));
    Table* table = m_refcount_cache->insert(offset, bytes, false);
    if (table == nullptr) {
        TRY(writeback());
        table = m_refcount_cache->insert(offset, std::move(bytes), false);
    }
    return table;
}

Expected<uint16_t> Image::refcount(uint64_t cluster) {
    uint64_t const per_block = m_header.refcounts_per_block();
    uint64_t const block_index = cluster / per_block;
    if (block_index >= m_refcount_table.size() || (m_refcount_table[block_index] & OFFSET_MASK) == 0)
        return uint16_t { 0 };
    Table* block = TRY(refcount_block(block_index));
    return load_be16(block->bytes.data() + (cluster % per_block) * 2);
}

Expected<void> Image::set_refcount(uint64_t cluster, uint16_t value) {
    uint64_t const per_block = m_header.refcounts_per_block();
    uint64_t const block_index = cluster / per_block;
    if (block_index >= m_refcount_table.size() || (m_refcount_table[block_index] & OFFSET_MASK) == 0)
        return Error(fmt::format("{}: no refcount block for cluster {}", m_path, cluster), EIO);
    Table* block = TRY(refcount_block(block_index));
    store_be16(block->bytes.data() + (cluster % per_block) * 2, value);
    block->dirty = true;
    return {};
}

Expected<void> Image::create_refcount_block(uint64_t block_index, uint64_t cluster) {
    uint64_t const per_block = m_header.refcounts_per_block();
    std::vector<std::byte> bytes(m_cluster_size);
    // The block describes itself: it lies in the range it covers.
    store_be16(bytes.data() + (cluster % per_block) * 2, 1);
    Table* block = m_refcount_cache->insert(cluster * m_cluster_size, bytes, true);
    if (block == nullptr) {
        TRY(writeback());
        block = m_refcount_cache->insert(cluster * m_cluster_size, std::move(bytes), true);
    }
    m_refcount_table[block_index] = cluster * m_cluster_size;
    m_dirty_refcount_table.insert(block_index);
    m_metadata_clusters.insert(cluster);
    m_end_cluster = std::max(m_end_cluster, cluster + 1);
    return {};
}

Expected<uint64_t> Image::allocate_clusters(uint64_t count, uint64_t alignment) {
    uint64_t const per_block = m_header.refcounts_per_block();
    while (true) {
        uint64_t run_start = m_free_cursor;
        uint64_t run_length = 0;
        uint64_t first_free = UINT64_MAX;
        for (uint64_t cluster = m_free_cursor; run_length < count; ++cluster) {
            bool free = cluster >= m_end_cluster;
            if (!free)
                free = TRY(refcount(cluster)) == 0 && !m_metadata_clusters.contains(cluster);
            if (!free) {
                run_length = 0;
                continue;
            }
            first_free = std::min(first_free, cluster);
            if (run_length == 0 && cluster % alignment != 0)
                continue; // free, but a run may not start here (left for smaller allocations)
            if (run_length++ == 0)
                run_start = cluster;
        }
        m_free_cursor = first_free;
        bool made_block = false;
        for (uint64_t block = run_start / per_block; block <= (run_start + count - 1) / per_block; ++block) {
            if (block >= m_refcount_table.size()) {
                TRY(grow_refcount_table(block + 1));
                made_block = true;
                break;
            }
            if ((m_refcount_table[block] & OFFSET_MASK) == 0) {
                TRY(create_refcount_block(block, std::max(run_start, block * per_block)));
                made_block = true;
                break;
            }
        }
        if (made_block)
            continue; // the new block (or table) took clusters: search again
        for (uint64_t cluster = run_start; cluster < run_start + count; ++cluster)
            TRY(set_refcount(cluster, 1));
        if (m_free_cursor == run_start)
            m_free_cursor = run_start + count;
        m_end_cluster = std::max(m_end_cluster, run_start + count);
        return run_start * m_cluster_size;
    }
}

Expected<void> Image::grow_refcount_table(uint64_t needed_entries) {
    TRY(writeback()); // the new table copies entries that must all be on disk
    uint64_t const per_block = m_header.refcounts_per_block();
    uint64_t const entries_per_cluster = m_cluster_size / 8;
    uint64_t const wanted = std::max<uint64_t>(needed_entries, m_refcount_table.size() * 2);
    uint64_t const table_clusters = (wanted + entries_per_cluster - 1) / entries_per_cluster;
    if (table_clusters * m_cluster_size > MAX_REFCOUNT_TABLE_BYTES)
        return Error(fmt::format("{}: the refcount table would exceed {} bytes", m_path, MAX_REFCOUNT_TABLE_BYTES),
                     ENOSPC);
    std::vector<uint64_t> table = m_refcount_table;
    table.resize(table_clusters * entries_per_cluster);
    // The new table and the blocks that describe it go past the end of the file and past every
    // cluster the old table can describe, so that only new blocks (written below, before the
    // header points to the table) count them. Placed at the end of the file alone, the table
    // could land in a range an existing block covers, whose counts for it would then never be
    // written: that happens when a run of several clusters crosses the old table's reach while
    // the file ends before it. The clusters skipped stay free for later allocations.
    uint64_t const start = std::max(m_end_cluster, m_refcount_table.size() * per_block);
    std::vector<uint64_t> new_blocks;
    for (uint64_t block_count = 0;;) {
        new_blocks.clear();
        uint64_t const end = start + table_clusters + block_count;
        for (uint64_t block = start / per_block; block <= (end - 1) / per_block; ++block)
            if (block >= table.size())
                return Error(fmt::format("{}: the refcount table cannot describe itself", m_path), ENOSPC);
            else if ((table[block] & OFFSET_MASK) == 0)
                new_blocks.push_back(block);
        if (new_blocks.size() == block_count)
            break;
        block_count = new_blocks.size();
    }
    uint64_t const end = start + table_clusters + new_blocks.size();
    for (size_t i = 0; i < new_blocks.size(); ++i) {
        uint64_t const block_cluster = start + table_clusters + i;
        std::vector<std::byte> bytes(m_cluster_size);
        for (uint64_t cluster = std::max(start, new_blocks[i] * per_block);
             cluster < std::min(end, (new_blocks[i] + 1) * per_block); ++cluster)
            store_be16(bytes.data() + (cluster % per_block) * 2, 1);
        TRY(as_expected(pwrite_all(m_fd, block_cluster * m_cluster_size, bytes.data(), bytes.size()),
                        "writing a refcount block"));
        table[new_blocks[i]] = block_cluster * m_cluster_size;
    }
    std::vector<std::byte> encoded(table_clusters * m_cluster_size);
    for (uint64_t i = 0; i < table.size(); ++i)
        store_be64(encoded.data() + i * 8, table[i]);
    TRY(as_expected(pwrite_all(m_fd, start * m_cluster_size, encoded.data(), encoded.size()),
                    "writing the refcount table"));
    TRY(as_expected(sync_file(m_fd), "fdatasync"));
    std::array<std::byte, 12> fields {};
    store_be64(fields.data(), start * m_cluster_size);
    store_be32(fields.data() + 8, static_cast<uint32_t>(table_clusters));
    TRY(as_expected(pwrite_all(m_fd, 48, fields.data(), fields.size()), "writing the header"));
    TRY(as_expected(sync_file(m_fd), "fdatasync"));

    uint64_t const old_start = m_header.refcount_table_offset / m_cluster_size;
    for (uint64_t cluster = old_start; cluster < old_start + m_header.refcount_table_clusters; ++cluster) {
        m_metadata_clusters.erase(cluster);
        m_pending_releases.push_back(cluster);
    }
    for (uint64_t cluster = start; cluster < end; ++cluster)
        m_metadata_clusters.insert(cluster);
    m_header.refcount_table_offset = start * m_cluster_size;
    m_header.refcount_table_clusters = static_cast<uint32_t>(table_clusters);
    m_refcount_table = std::move(table);
    m_end_cluster = end;
    return {};
}

Expected<void> Image::writeback() {
    if (!has_dirty_metadata())
        return {};
    auto write_table = [this](Table& table) {
        return as_expected(pwrite_all(m_fd, table.offset, table.bytes.data(), table.bytes.size()),
                           "writing qcow2 metadata");
    };
    auto write_entries = [this](std::set<uint64_t>& dirty, std::vector<uint64_t> const& table,
                                uint64_t table_offset) -> Expected<void> {
        for (uint64_t index : dirty) {
            std::array<std::byte, 8> bytes {};
            store_be64(bytes.data(), table[index]);
            TRY(as_expected(pwrite_all(m_fd, table_offset + index * 8, bytes.data(), bytes.size()),
                            "writing a qcow2 table entry"));
        }
        dirty.clear();
        return {};
    };
    // Refcounts (and, by the barrier below, every data write so far) before anything points to
    // the clusters they describe.
    TRY(m_refcount_cache->for_each_dirty(write_table));
    if (!m_dirty_refcount_table.empty()) {
        TRY(as_expected(sync_file(m_fd), "fdatasync"));
        TRY(write_entries(m_dirty_refcount_table, m_refcount_table, m_header.refcount_table_offset));
    }
    TRY(as_expected(sync_file(m_fd), "fdatasync"));
    TRY(m_l2_cache->for_each_dirty(write_table));
    if (!m_dirty_l1.empty()) {
        TRY(as_expected(sync_file(m_fd), "fdatasync"));
        TRY(write_entries(m_dirty_l1, m_l1, m_header.l1_table_offset));
    }
    TRY(as_expected(sync_file(m_fd), "fdatasync"));
    // Nothing on disk references these clusters any more.
    auto releases = std::exchange(m_pending_releases, {});
    for (uint64_t cluster : releases) {
        uint16_t const count = TRY(refcount(cluster));
        if (count == 0)
            continue;
        TRY(set_refcount(cluster, static_cast<uint16_t>(count - 1)));
        if (count == 1)
            m_free_cursor = std::min(m_free_cursor, cluster);
    }
    return {};
}

int32_t Image::flush() {
    if (m_read_only)
        return disk_io::flush(m_fd);
    if (has_dirty_metadata()) {
        auto written = writeback();
        if (!written)
            return to_result(written.error());
        if (m_refcount_cache->any_dirty()) // the releases just made
            if (auto again = writeback(); !again)
                return to_result(again.error());
        return 0;
    }
    return sync_file(m_fd);
}

Expected<uint64_t> Image::l2_entry(uint64_t guest_offset) {
    uint64_t const l2_entries = m_header.l2_entries();
    uint64_t const cluster_index = guest_offset / m_cluster_size;
    Table* table = TRY(l2_table(cluster_index / l2_entries, false));
    if (table == nullptr)
        return uint64_t { 0 };
    return load_be64(table->bytes.data() + (cluster_index % l2_entries) * 8);
}

Expected<void> Image::set_l2_entry(uint64_t guest_offset, uint64_t entry) {
    uint64_t const l2_entries = m_header.l2_entries();
    uint64_t const cluster_index = guest_offset / m_cluster_size;
    Table* table = TRY(l2_table(cluster_index / l2_entries, true));
    std::byte* slot = table->bytes.data() + (cluster_index % l2_entries) * 8;
    uint64_t const old = load_be64(slot);
    store_be64(slot, entry);
    table->dirty = true;
    release_later(old);
    return {};
}

void Image::release_later(uint64_t entry) {
    if (entry & ENTRY_COMPRESSED) {
        auto const range = compressed_range(entry, m_header.cluster_bits);
        for (uint64_t cluster = range.offset / m_cluster_size;
             cluster <= (range.offset + range.length - 1) / m_cluster_size; ++cluster)
            m_pending_releases.push_back(cluster);
        return;
    }
    if (uint64_t const offset = entry & OFFSET_MASK; offset != 0)
        m_pending_releases.push_back(offset / m_cluster_size);
}

Expected<Extent> Image::map(uint64_t offset, uint64_t length) {
    uint64_t const l2_entries = m_header.l2_entries();
    uint64_t const cluster_index = offset / m_cluster_size;
    uint64_t const in_cluster = offset % m_cluster_size;
    uint64_t const l1_index = cluster_index / l2_entries;
    // Bytes from `offset` to the end of its L2 table's range.
    uint64_t const table_left = (l2_entries - cluster_index % l2_entries) * m_cluster_size - in_cluster;
    length = std::min(length, table_left);
    if (l1_index >= m_l1.size())
        return Error(fmt::format("{}: offset {:#x} is beyond the L1 table", m_path, offset), EIO);
    Table* table = TRY(l2_table(l1_index, false));
    if (table == nullptr)
        return Extent { ExtentKind::Unallocated, length, 0, false };

    auto classify = [&](uint64_t entry, Extent& out) -> Expected<void> {
        if (entry & ENTRY_COMPRESSED) {
            out = { ExtentKind::Compressed, 0, entry, false };
            return {};
        }
        if (entry & L2_RESERVED_MASK)
            return Error(fmt::format("{}: L2 entry {:#x}: reserved bits are set", m_path, entry), EIO);
        uint64_t const host = entry & OFFSET_MASK;
        if (entry & ENTRY_ZERO)
            out = { ExtentKind::Zero, 0, 0, false };
        else if (host == 0)
            out = { ExtentKind::Unallocated, 0, 0, false };
        else {
            TRY(check_data_cluster(host));
            out = { ExtentKind::Data, 0, host, !m_read_only && (entry & ENTRY_COPIED) != 0 };
        }
        return {};
    };
    std::byte const* entries = table->bytes.data();
    uint64_t index = cluster_index % l2_entries;
    Extent extent;
    TRY(classify(load_be64(entries + index * 8), extent));
    if (extent.kind == ExtentKind::Data)
        extent.host_offset += in_cluster;
    extent.length = std::min(length, m_cluster_size - in_cluster);
    if (extent.kind == ExtentKind::Compressed)
        return extent; // one cluster at a time
    while (extent.length < length) {
        Extent next;
        TRY(classify(load_be64(entries + (++index) * 8), next));
        if (next.kind != extent.kind || next.writable_in_place != extent.writable_in_place ||
            (next.kind == ExtentKind::Data && next.host_offset != extent.host_offset + extent.length))
            break;
        extent.length = std::min(length, extent.length + m_cluster_size);
    }
    return extent;
}

int32_t Image::read_backing(uint64_t offset, std::span<iovec const> buffers) {
    uint64_t const length = total_length(buffers);
    uint64_t const backing_size = m_backing ? m_backing->size_bytes() : 0;
    uint64_t const from_backing = offset < backing_size ? std::min(length, backing_size - offset) : 0;
    if (from_backing > 0) {
        std::vector<iovec> part;
        slice_buffers(buffers, 0, from_backing, part);
        int32_t const result = m_backing->qcow2() != nullptr ? m_backing->qcow2()->read(offset, part)
                                                             : disk_io::read(m_backing->fd(), offset, part);
        if (result < 0)
            return result;
        zero_buffers(buffers, static_cast<uint64_t>(result), length - static_cast<uint64_t>(result));
    } else {
        zero_buffers(buffers, 0, length);
    }
    return static_cast<int32_t>(length);
}

Expected<void> Image::read_compressed(uint64_t entry, std::span<std::byte> cluster) {
    auto const range = compressed_range(entry, m_header.cluster_bits);
    if (range.length > 2 * m_cluster_size || range.offset / m_cluster_size >= m_end_cluster ||
        m_metadata_clusters.contains(range.offset / m_cluster_size))
        return Error(fmt::format("{}: compressed cluster at {:#x} (+{}) is out of range", m_path, range.offset,
                                 range.length),
                     EIO);
    std::vector<std::byte> compressed(range.length);
    iovec const buffer { compressed.data(), compressed.size() };
    int32_t const got = disk_io::read(m_fd, range.offset, std::span(&buffer, 1));
    if (got < 0)
        return Error::from_errno("reading a compressed cluster", -got);
    z_stream stream {};
    // Raw deflate with a 4 KiB window, as qcow2 writes it.
    if (inflateInit2(&stream, -12) != Z_OK)
        return Error("inflateInit2 failed", EIO);
    stream.next_in = reinterpret_cast<Bytef*>(compressed.data());
    stream.avail_in = static_cast<uInt>(got);
    stream.next_out = reinterpret_cast<Bytef*>(cluster.data());
    stream.avail_out = static_cast<uInt>(cluster.size());
    int const status = inflate(&stream, Z_FINISH);
    bool const complete = stream.avail_out == 0 && (status == Z_STREAM_END || status == Z_BUF_ERROR || status == Z_OK);
    inflateEnd(&stream);
    if (!complete)
        return Error(fmt::format("{}: compressed cluster at {:#x} does not inflate to a cluster", m_path, range.offset),
                     EIO);
    return {};
}

int32_t Image::read_extent(Extent const& extent, uint64_t offset, std::span<iovec const> buffers) {
    switch (extent.kind) {
    case ExtentKind::Zero:
        zero_buffers(buffers, 0, extent.length);
        return static_cast<int32_t>(extent.length);
    case ExtentKind::Unallocated:
        return read_backing(offset, buffers);
    case ExtentKind::Compressed: {
        if (auto inflated = read_compressed(extent.host_offset, m_scratch); !inflated)
            return to_result(inflated.error());
        copy_to_buffers(buffers, 0, m_scratch.data() + offset % m_cluster_size, extent.length);
        return static_cast<int32_t>(extent.length);
    }
    case ExtentKind::Data:
        break;
    }
    int32_t const result = disk_io::read(m_fd, extent.host_offset, buffers);
    if (result >= 0 && static_cast<uint64_t>(result) != extent.length)
        return -EIO; // a data cluster past the end of the file
    return result;
}

int32_t Image::read(uint64_t offset, std::span<iovec const> buffers) {
    int64_t const requested = disk_io::checked_transfer_length(buffers);
    if (requested < 0)
        return static_cast<int32_t>(requested);
    if (offset >= m_header.size)
        return 0;
    uint64_t const length = std::min<uint64_t>(static_cast<uint64_t>(requested), m_header.size - offset);
    std::vector<iovec> part;
    for (uint64_t position = 0; position < length;) {
        auto extent = map(offset + position, length - position);
        if (!extent)
            return to_result(extent.error());
        part.clear();
        slice_buffers(buffers, position, extent->length, part);
        int32_t const result = read_extent(*extent, offset + position, part);
        if (result < 0)
            return result;
        position += extent->length;
    }
    return static_cast<int32_t>(length);
}

int32_t Image::write(uint64_t offset, std::span<iovec const> buffers) { return write_allocating(offset, buffers); }

Expected<void> Image::allocate_and_write(uint64_t cluster_offset, uint64_t skip, std::span<iovec const> buffers,
                                         uint64_t buffer_offset, uint64_t length) {
    // Copy-on-write: the cluster's current content (zeros, backing file, compressed or shared
    // data) around the new bytes, written to a new cluster before the L2 entry moves there.
    if (skip != 0 || length != m_cluster_size) {
        std::vector<std::byte> cluster(m_cluster_size);
        iovec const whole { cluster.data(), cluster.size() };
        int32_t const old = read(cluster_offset, std::span(&whole, 1));
        if (old < 0)
            return Error::from_errno("reading the cluster to copy", -old);
        copy_from_buffers(buffers, buffer_offset, cluster.data() + skip, length);
        uint64_t const host = TRY(allocate_clusters(1));
        TRY(as_expected(pwrite_all(m_fd, host, cluster.data(), cluster.size()), "writing a new cluster"));
        return set_l2_entry(cluster_offset, host | ENTRY_COPIED);
    }
    uint64_t const host = TRY(allocate_clusters(1));
    std::vector<iovec> part;
    slice_buffers(buffers, buffer_offset, length, part);
    TRY(as_expected(pwrite_buffers(m_fd, host, part), "writing a new cluster"));
    return set_l2_entry(cluster_offset, host | ENTRY_COPIED);
}

Expected<void> Image::allocate_and_write_clusters(uint64_t guest_offset, uint64_t count, std::span<iovec const> buffers,
                                                  uint64_t buffer_offset) {
    // Ordered as allocate_and_write: refcounts (in allocate_clusters), then the data, then the
    // L2 entries, so a crash between the steps leaks the clusters at worst.
    // The run starts at a host offset aligned like its size (a power of two up to 2 MiB), so
    // the host page cache can hold it in folios that large: a large folio must be naturally
    // aligned in the file, and a run placed right after the metadata clusters would be cut into
    // small ones however it is written. The free clusters skipped serve later single-cluster
    // allocations (L2 tables, copy-on-write).
    uint64_t alignment = 1;
    while (alignment * 2 <= count && (alignment * 2) * m_cluster_size <= LARGEST_ALIGNED_RUN)
        alignment *= 2;
    uint64_t const host = TRY(allocate_clusters(count, alignment));
    std::vector<iovec> part;
    slice_buffers(buffers, buffer_offset, count * m_cluster_size, part);
    TRY(as_expected(pwrite_buffers(m_fd, host, part), "writing new clusters"));
    for (uint64_t i = 0; i < count; ++i)
        TRY(set_l2_entry(guest_offset + i * m_cluster_size, (host + i * m_cluster_size) | ENTRY_COPIED));
    return {};
}

int32_t Image::write_allocating(uint64_t offset, std::span<iovec const> buffers) {
    if (m_read_only)
        return -EROFS;
    int64_t const requested = disk_io::checked_transfer_length(buffers);
    if (requested < 0)
        return static_cast<int32_t>(requested);
    auto const length = static_cast<uint64_t>(requested);
    if (offset > m_header.size || length > m_header.size - offset)
        return -EINVAL;
    std::vector<iovec> part;
    for (uint64_t position = 0; position < length;) {
        auto extent = map(offset + position, length - position);
        if (!extent)
            return to_result(extent.error());
        if (extent->kind == ExtentKind::Data && extent->writable_in_place) {
            part.clear();
            slice_buffers(buffers, position, extent->length, part);
            if (int32_t const result = pwrite_buffers(m_fd, extent->host_offset, part); result < 0)
                return result;
            position += extent->length;
            continue;
        }
        uint64_t const guest = offset + position;
        uint64_t const skip = guest % m_cluster_size;
        // Whole clusters that the write replaces entirely need no copy-on-write: a run of them
        // (one extent, so one L2 table) gets one contiguous allocation and one pwritev, as QEMU
        // allocates a request's clusters together. The image's data then stays contiguous on
        // the host, and the host page cache holds it in large folios, as it does a raw file
        // written the same way; cluster by cluster, 4 KiB random reads of such data cost the
        // kernel several times more in page-cache lookups (bench/block_bench.cc).
        uint64_t const whole = skip == 0 ? std::min(extent->length, length - position) / m_cluster_size : 0;
        if (whole >= 2) {
            if (auto written = allocate_and_write_clusters(guest, whole, buffers, position); !written)
                return to_result(written.error());
            position += whole * m_cluster_size;
            continue;
        }
        uint64_t const piece = std::min(m_cluster_size - skip, length - position);
        if (auto written = allocate_and_write(guest - skip, skip, buffers, position, piece); !written)
            return to_result(written.error());
        position += piece;
    }
    return static_cast<int32_t>(length);
}

int32_t Image::write_zeroes(uint64_t offset, uint64_t length) {
    if (m_read_only)
        return -EROFS;
    if (offset > m_header.size || length > m_header.size - offset)
        return -EINVAL;
    std::vector<std::byte> zeros;
    for (uint64_t position = 0; position < length;) {
        uint64_t const guest = offset + position;
        uint64_t const skip = guest % m_cluster_size;
        uint64_t const piece = std::min(m_cluster_size - skip, length - position);
        bool const whole = skip == 0 && (piece == m_cluster_size || guest + piece == m_header.size);
        if (whole) {
            auto entry = l2_entry(guest);
            if (!entry)
                return to_result(entry.error());
            // Bit 0 of a compressed entry belongs to its offset, not the zero flag.
            bool const reads_zero =
                (!(*entry & ENTRY_COMPRESSED) && (*entry & ENTRY_ZERO)) || (*entry == 0 && !m_backing);
            if (!reads_zero)
                if (auto set = set_l2_entry(guest, ENTRY_ZERO); !set)
                    return to_result(set.error());
        } else {
            zeros.assign(piece, std::byte { 0 });
            iovec const buffer { zeros.data(), piece };
            if (int32_t const result = write_allocating(guest, std::span(&buffer, 1)); result < 0)
                return result;
        }
        position += piece;
    }
    return 0;
}

int32_t Image::discard(uint64_t offset, uint64_t length) {
    if (m_read_only)
        return -EROFS;
    if (offset > m_header.size || length > m_header.size - offset)
        return -EINVAL;
    for (uint64_t position = 0; position < length;) {
        uint64_t const guest = offset + position;
        uint64_t const skip = guest % m_cluster_size;
        uint64_t const piece = std::min(m_cluster_size - skip, length - position);
        if (skip == 0 && (piece == m_cluster_size || guest + piece == m_header.size)) {
            auto entry = l2_entry(guest);
            if (!entry)
                return to_result(entry.error());
            // Over a backing file a deallocated cluster would show the backing data again.
            uint64_t const replacement = m_backing ? ENTRY_ZERO : 0;
            if (*entry != replacement && !(*entry == 0 && !m_backing))
                if (auto set = set_l2_entry(guest, replacement); !set)
                    return to_result(set.error());
        }
        position += piece;
    }
    return 0;
}

} // namespace kvmm::qcow2

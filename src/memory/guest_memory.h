// GuestMemory: the guest's RAM, as host mappings of one or more guest-physical
// regions, and the only way kvmm code reads or writes it.
//
// Every access is bounds- and overflow-checked, and an access may cross from one
// region into the next when they are contiguous in guest-physical space. Guest
// RAM is shared with running vCPUs: contents can change under any reader, so
// callers copy what they parse (read/read_obj) and validate the copy.
//
// Dirty tracking (diff snapshots): once enable_dirty_tracking() is called, every write through
// this object - write(), fill_zero(), and host_ranges(), whose ranges devices hand to the kernel
// for I/O in either direction and so count as written - sets the page's bit in a per-region
// bitmap of atomic words; without it a write costs one null check more.
//
// Threading: the region table is immutable after create(); concurrent reads and
// writes of guest bytes are as safe (and as racy) as the guest's own accesses. The dirty
// bitmaps are atomic words (relaxed: a snapshot reads them only after pausing the writers,
// which synchronises with them); enable_dirty_tracking() before any other thread uses it.
#pragma once

#include "base/expected.h"
#include "base/memory_mapping.h"
#include "memory/guest_address.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <sys/uio.h>
#include <type_traits>
#include <vector>

namespace kvmm {

struct GuestRegionSpec {
    GuestAddress start;
    uint64_t size {};
};

class GuestMemory {
public:
    struct Region {
        GuestAddress start;
        uint64_t size;
        MemoryMapping mapping;
        // Mapped from a memory file (create_from_file) rather than anonymous memory.
        bool from_file { false };
        // One bit per 4 KiB page written through GuestMemory, while dirty tracking is on.
        std::unique_ptr<std::atomic<uint64_t>[]> dirty_pages {};

        GuestAddress end() const { return start.offset(size); } // one past the last byte
    };

    // Maps each region (sizes page-aligned, sorted, non-overlapping). Fails with a message
    // naming the offending region.
    static Expected<GuestMemory> create(std::vector<GuestRegionSpec> const& regions,
                                        MemoryMapping::HugePages huge_pages = MemoryMapping::HugePages::No);

    // Guest memory over a memory file (guest_memory_file.cc): the regions lie back to back in
    // the file in guest-physical order (region i at the sum of the sizes before it), and each
    // is mapped privately, so a page is read on the guest's first touch and the guest's writes
    // never reach the file; the cost does not grow with the guest's size. The file must be a
    // regular file exactly as long as the regions together: a shorter one is refused (its
    // missing pages would fault), and so is a longer one (it is not this layout's file).
    // `what` names the file in errors.
    static Expected<GuestMemory> create_from_file(std::vector<GuestRegionSpec> const& regions, int fd,
                                                  std::string_view what);

    // What write_to_file() did.
    struct FileWriteStats {
        uint64_t bytes_written { 0 };
        uint64_t zero_pages_skipped { 0 };
    };
    // Writes every region, in order, to `fd` from offset 0 in the layout create_from_file()
    // reads, and sets the file's length to total_size(). All-zero pages are not written: they
    // stay holes, which read back as zeros. Anonymous pages the guest never touched are
    // skipped without being read (mincore), so a large idle guest costs little more than
    // what it used. The caller keeps the guest from running meanwhile.
    Expected<FileWriteStats> write_to_file(int fd) const;
    // A diff snapshot's memory file: sets the file's length to total_size() and writes only
    // the pages set in `pages` (one bitmap per region, as take_dirty_pages() gives them), each
    // at the offset write_to_file() would put it, zero pages included - the file is applied
    // on top of a base by copying its data extents, so a page the guest zeroed must be data.
    // The rest stays holes.
    Expected<FileWriteStats> write_pages_to_file(int fd, std::span<std::vector<uint64_t> const> pages) const;

    // Turns dirty tracking on (see above); idempotent. Builder thread, before sharing.
    void enable_dirty_tracking();
    bool dirty_tracking() const { return !m_regions.empty() && m_regions.front().dirty_pages != nullptr; }
    // The pages of region `region_index` written through this object since the last call, as a
    // bitmap of (pages + 63) / 64 words; clears them. Empty without tracking.
    std::vector<uint64_t> take_dirty_pages(size_t region_index) const;
    // Sets the pages of `bitmap` in region `region_index` again (a snapshot that failed gives
    // back what it took, so the next one still writes them). No-op without tracking.
    void mark_dirty_pages(size_t region_index, std::span<uint64_t const> bitmap) const;

    GuestMemory(GuestMemory&&) = default;
    GuestMemory& operator=(GuestMemory&&) = default;

    Expected<void> read(GuestAddress address, std::span<std::byte> destination) const;
    Expected<void> write(GuestAddress address, std::span<std::byte const> source) const;
    // Writes `length` zero bytes starting at address.
    Expected<void> fill_zero(GuestAddress address, uint64_t length) const;

    // clang-format off (clang-format 14 cannot lay out requires-clauses)
    template <typename T>
    requires std::is_trivially_copyable_v<T> Expected<T> read_obj(GuestAddress address)
    const {
        T object {};
        TRY(read(address, std::as_writable_bytes(std::span(&object, 1))));
        return object;
    }

    template <typename T>
    requires std::is_trivially_copyable_v<T> Expected<void> write_obj(GuestAddress address, T const& object)
    const { return write(address, std::as_bytes(std::span(&object, 1))); }
    // clang-format on

    // Appends to `pieces` the host ranges backing [address, address+length) (more than one
    // when the range crosses regions), for zero-copy I/O by the kernel (readv/io_uring) into
    // buffers the guest gave a device. Checked like read()/write(); nothing is appended on error.
    // The range counts as written for dirty tracking (the kernel may write it).
    Expected<void> host_ranges(GuestAddress address, uint64_t length, std::vector<iovec>& pieces) const;

    // True when [address, address+length) lies entirely in guest RAM.
    bool contains_range(GuestAddress address, uint64_t length) const;

    // Total RAM in bytes and the regions, for the hypervisor layer's memory slots and for
    // building the e820/ACPI memory map. Host pointers of regions go only to the hypervisor.
    uint64_t total_size() const;
    std::vector<Region> const& regions() const { return m_regions; }
    GuestAddress end_address() const { return m_regions.back().end(); }

private:
    explicit GuestMemory(std::vector<Region> regions) : m_regions(std::move(regions)) {}

    // Calls visit(host_pointer, length) for each piece of [address, address+length); fails
    // without visiting anything when any byte is outside guest RAM.
    // A Write access marks the pieces dirty while tracking is on.
    enum class Access { Read, Write };
    template <typename Visitor>
    Expected<void> for_each_piece(GuestAddress address, uint64_t length, Access access, Visitor&& visit) const;

    std::vector<Region> m_regions;
};

} // namespace kvmm

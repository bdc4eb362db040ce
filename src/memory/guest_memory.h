// GuestMemory: the guest's RAM, as host mappings of one or more guest-physical
// regions, and the only way kvmm code reads or writes it.
//
// Every access is bounds- and overflow-checked, and an access may cross from one
// region into the next when they are contiguous in guest-physical space. Guest
// RAM is shared with running vCPUs: contents can change under any reader, so
// callers copy what they parse (read/read_obj) and validate the copy.
//
// Threading: the region table is immutable after create(); concurrent reads and
// writes of guest bytes are as safe (and as racy) as the guest's own accesses.
#pragma once

#include "base/expected.h"
#include "base/memory_mapping.h"
#include "memory/guest_address.h"

#include <cstddef>
#include <cstdint>
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
    template <typename Visitor>
    Expected<void> for_each_piece(GuestAddress address, uint64_t length, Visitor&& visit) const;

    std::vector<Region> m_regions;
};

} // namespace kvmm

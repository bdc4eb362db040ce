// Giving guest pages back to the host: the balloon's inflate queue
// (virtio 1.2 section 5.5.6.1, arrays of le32 page frame numbers of 4 KiB
// pages) and free page reporting (5.5.6.5, page-aligned guest ranges).
//
// Guest RAM is anonymous private memory (MemoryMapping), so madvise(MADV_DONTNEED)
// frees the host pages at once and a later guest access faults in a zeroed
// page - exactly what a deflated or reused balloon page must look like.
// PFNs are sorted and merged into runs first so that a typical inflate buffer
// (256 mostly-contiguous pages from Linux) costs a few system calls, not 256.
//
// Threading: stateless functions; the device calls them on its event-loop thread.
#pragma once

#include "base/expected.h"
#include "memory/guest_memory.h"

#include <cstdint>
#include <span>
#include <sys/uio.h>
#include <vector>

namespace kvmm::virtio {

// 5.5.6: VIRTIO_BALLOON_PFN_SHIFT is 12 whatever the guest's own page size.
inline constexpr unsigned BALLOON_PFN_SHIFT = 12;
inline constexpr uint64_t BALLOON_PAGE_SIZE = uint64_t { 1 } << BALLOON_PFN_SHIFT;

struct PageRun {
    uint64_t first_pfn;
    uint64_t count;

    bool operator==(PageRun const&) const = default;
};

// Decodes le32 PFNs from `bytes` into `pfns` (replacing its contents). A trailing partial
// entry (length not a multiple of 4) is ignored. Returns the number of trailing bytes ignored.
size_t decode_pfns(std::span<std::byte const> bytes, std::vector<uint32_t>& pfns);

// Sorts `pfns`, drops duplicates and writes the maximal runs of consecutive PFNs to `runs`
// (replacing its contents). O(n log n), no allocation beyond `runs`' capacity for n entries.
void coalesce_pfns(std::vector<uint32_t>& pfns, std::vector<PageRun>& runs);

// Releases the host memory behind guest range [address, address+length): both must be
// multiples of BALLOON_PAGE_SIZE and the range must lie in guest RAM. `scratch` is reused
// for the host pieces. Fails without releasing anything on a bad range; a failing madvise
// is reported with the piece it failed on.
Expected<void> release_guest_range(GuestMemory const& memory, GuestAddress address, uint64_t length,
                                   std::vector<iovec>& scratch);

} // namespace kvmm::virtio

#include "devices/virtio/balloon/page_release.h"

#include <algorithm>
#include <sys/mman.h>

namespace kvmm::virtio {

size_t decode_pfns(std::span<std::byte const> bytes, std::vector<uint32_t>& pfns) {
    size_t const count = bytes.size() / sizeof(uint32_t);
    pfns.clear();
    pfns.reserve(count);
    for (size_t i = 0; i < count; ++i) {
        auto const entry = bytes.subspan(i * sizeof(uint32_t), sizeof(uint32_t));
        uint32_t const pfn = static_cast<uint32_t>(entry[0]) | static_cast<uint32_t>(entry[1]) << 8 |
                             static_cast<uint32_t>(entry[2]) << 16 | static_cast<uint32_t>(entry[3]) << 24;
        pfns.push_back(pfn);
    }
    return bytes.size() % sizeof(uint32_t);
}

void coalesce_pfns(std::vector<uint32_t>& pfns, std::vector<PageRun>& runs) {
    runs.clear();
    std::sort(pfns.begin(), pfns.end());
    pfns.erase(std::unique(pfns.begin(), pfns.end()), pfns.end());
    for (uint32_t const pfn : pfns) {
        if (!runs.empty() && runs.back().first_pfn + runs.back().count == pfn)
            ++runs.back().count;
        else
            runs.push_back(PageRun { pfn, 1 });
    }
}

Expected<void> release_guest_range(GuestMemory const& memory, GuestAddress address, uint64_t length,
                                   std::vector<iovec>& scratch) {
    if (address.value() % BALLOON_PAGE_SIZE != 0 || length % BALLOON_PAGE_SIZE != 0 || length == 0)
        return Error::format("guest range {:#x}+{:#x} is not a non-empty run of whole 4 KiB pages", address.value(),
                             length);
    scratch.clear();
    TRY(memory.host_ranges(address, length, scratch));
    for (auto const& piece : scratch) {
        // Region starts and sizes are page-aligned (GuestMemory::create), so a 4 KiB-aligned
        // guest range maps to 4 KiB-aligned host pieces, as madvise requires.
        if (::madvise(piece.iov_base, piece.iov_len, MADV_DONTNEED) != 0)
            return Error::from_errno(fmt::format("madvise(MADV_DONTNEED) of {:#x} bytes for guest range {:#x}+{:#x}",
                                                 piece.iov_len, address.value(), length));
    }
    return {};
}

} // namespace kvmm::virtio

// Guest memory to and from a memory file (snapshots). The file is untrusted input: its type
// and length are checked against the layout before anything is mapped.
#include "memory/guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvmm {

namespace {

constexpr uint64_t PAGE_SIZE = 4096;

bool is_zero_page(std::byte const* page) {
    // The first word settles most pages that hold data; the rest is compared with itself
    // shifted by one byte, which is all zeros exactly when every byte equals the first.
    uint64_t first = 0;
    std::memcpy(&first, page, sizeof(first));
    return first == 0 && std::memcmp(page, page + 1, PAGE_SIZE - 1) == 0;
}

Expected<void> write_all(int fd, std::byte const* data, uint64_t length, uint64_t offset) {
    while (length > 0) {
        ssize_t const written = ::pwrite(fd, data, length, static_cast<off_t>(offset));
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno(fmt::format("writing {} bytes of guest memory at file offset {}", length, offset));
        }
        if (written == 0)
            return Error::format("writing guest memory at file offset {}: no progress", offset);
        data += written;
        offset += static_cast<uint64_t>(written);
        length -= static_cast<uint64_t>(written);
    }
    return {};
}

} // namespace

Expected<GuestMemory> GuestMemory::create_from_file(std::vector<GuestRegionSpec> const& specs, int fd,
                                                    std::string_view what) {
    if (specs.empty())
        return Error("guest memory needs at least one region");
    uint64_t expected_size = 0;
    for (auto const& spec : specs) {
        auto const sum = checked_add(expected_size, spec.size);
        if (!sum || spec.size == 0 || spec.size % PAGE_SIZE != 0)
            return Error::format("guest memory region at {:#x} has invalid size {:#x}", spec.start.value(), spec.size);
        expected_size = *sum;
    }
    struct stat status {};
    if (::fstat(fd, &status) != 0)
        return Error::from_errno(fmt::format("memory file {}", what));
    if (!S_ISREG(status.st_mode))
        return Error::format("memory file {} is not a regular file", what);
    auto const file_size = static_cast<uint64_t>(status.st_size);
    if (file_size < expected_size)
        return Error::format("memory file {} is too short: {} bytes, the snapshot's guest memory needs {}", what,
                             file_size, expected_size);
    if (file_size > expected_size)
        return Error::format("memory file {} is {} bytes, longer than the snapshot's guest memory ({} bytes): it is "
                             "not this snapshot's memory file",
                             what, file_size, expected_size);
    std::vector<Region> regions;
    regions.reserve(specs.size());
    uint64_t offset = 0;
    for (auto const& spec : specs) {
        if (!regions.empty() && spec.start < regions.back().end())
            return Error::format("guest memory region at {:#x} overlaps or precedes the region ending at {:#x}",
                                 spec.start.value(), regions.back().end().value());
        auto mapping = TRY(MemoryMapping::create_file_private(fd, offset, spec.size)
                               .with_context(fmt::format("memory file {}", what)));
        regions.push_back(Region { spec.start, spec.size, std::move(mapping), true });
        offset += spec.size;
    }
    return GuestMemory(std::move(regions));
}

Expected<GuestMemory::FileWriteStats> GuestMemory::write_to_file(int fd) const {
    FileWriteStats stats;
    // The length first, so that skipped pages (and a shorter old file's end) read as zeros.
    if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(total_size())) != 0)
        return Error::from_errno("setting the memory file's length");
    uint64_t file_offset = 0;
    for (auto const& region : m_regions) {
        std::byte const* const base = region.mapping.data();
        // Which anonymous pages exist at all: one that was never touched reads as zeros and is
        // not read here (reading would map a page for it). A file-backed page that is not
        // resident may still hold data in the file, so those are all read.
        std::vector<unsigned char> resident;
        if (!region.from_file) {
            resident.resize(region.size / PAGE_SIZE);
            if (::mincore(region.mapping.data(), region.size, resident.data()) != 0)
                resident.clear(); // read every page instead
        }
        // Runs of pages with data are written with one call each.
        uint64_t run_start = 0, position = 0;
        auto flush_run = [&]() -> Expected<void> {
            if (position > run_start) {
                TRY(write_all(fd, base + run_start, position - run_start, file_offset + run_start));
                stats.bytes_written += position - run_start;
            }
            return {};
        };
        for (; position < region.size; position += PAGE_SIZE) {
            bool const untouched = !resident.empty() && !(resident[position / PAGE_SIZE] & 1);
            if (untouched || is_zero_page(base + position)) {
                TRY(flush_run());
                run_start = position + PAGE_SIZE;
                ++stats.zero_pages_skipped;
            }
        }
        TRY(flush_run());
        file_offset += region.size;
    }
    return stats;
}

Expected<GuestMemory::FileWriteStats>
GuestMemory::write_pages_to_file(int fd, std::span<std::vector<uint64_t> const> pages) const {
    if (pages.size() != m_regions.size())
        return Error::format("dirty page bitmaps for {} regions, guest memory has {}", pages.size(), m_regions.size());
    FileWriteStats stats;
    if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(total_size())) != 0)
        return Error::from_errno("setting the memory file's length");
    uint64_t file_offset = 0;
    for (size_t index = 0; index < m_regions.size(); ++index) {
        auto const& region = m_regions[index];
        auto const& bitmap = pages[index];
        uint64_t const page_count = region.size / PAGE_SIZE;
        if (bitmap.size() * 64 < page_count)
            return Error::format("dirty page bitmap of region {} covers {} pages, the region has {}", index,
                                 bitmap.size() * 64, page_count);
        auto is_set = [&](uint64_t page) { return (bitmap[page / 64] >> (page % 64)) & 1; };
        // Runs of consecutive dirty pages are written with one call each.
        uint64_t page = 0, written_pages = 0;
        while (page < page_count) {
            if (bitmap[page / 64] == 0) {
                page = (page / 64 + 1) * 64;
                continue;
            }
            if (!is_set(page)) {
                ++page;
                continue;
            }
            uint64_t const run_start = page;
            while (page < page_count && is_set(page))
                ++page;
            uint64_t const offset = run_start * PAGE_SIZE;
            uint64_t const length = (page - run_start) * PAGE_SIZE;
            TRY(write_all(fd, region.mapping.data() + offset, length, file_offset + offset));
            stats.bytes_written += length;
            written_pages += page - run_start;
        }
        // Here: the clean pages, left as holes.
        stats.zero_pages_skipped += page_count - written_pages;
        file_offset += region.size;
    }
    return stats;
}

} // namespace kvmm

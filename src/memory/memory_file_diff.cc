#include "memory/memory_file_diff.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <vector>

namespace kvmm {

namespace {

Expected<uint64_t> regular_file_size(int fd, std::string_view what) {
    struct stat status {};
    if (::fstat(fd, &status) != 0)
        return Error::from_errno(fmt::format("memory file {}", what));
    if (!S_ISREG(status.st_mode))
        return Error::format("memory file {} is not a regular file", what);
    return static_cast<uint64_t>(status.st_size);
}

// lseek(SEEK_DATA or SEEK_HOLE) from `offset`; nullopt at the end of the file (ENXIO).
Expected<std::optional<uint64_t>> seek(int fd, uint64_t offset, int whence, std::string_view what) {
    off_t const found = ::lseek(fd, static_cast<off_t>(offset), whence);
    if (found < 0) {
        if (errno == ENXIO)
            return std::optional<uint64_t> {};
        return Error::from_errno(fmt::format("memory file {}: lseek({}) from offset {}", what,
                                             whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE", offset));
    }
    return std::optional<uint64_t>(static_cast<uint64_t>(found));
}

Expected<void> copy_range(int from, int to, uint64_t offset, uint64_t length, std::vector<std::byte>& buffer,
                          std::string_view from_what, std::string_view to_what) {
    while (length > 0) {
        size_t const chunk = static_cast<size_t>(std::min<uint64_t>(length, buffer.size()));
        ssize_t const got = ::pread(from, buffer.data(), chunk, static_cast<off_t>(offset));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return Error::from_errno(fmt::format("reading memory file {} at offset {}", from_what, offset));
        if (got == 0)
            return Error::format("memory file {} ended at offset {} while being read", from_what, offset);
        size_t done = 0;
        while (done < static_cast<size_t>(got)) {
            ssize_t const put =
                ::pwrite(to, buffer.data() + done, static_cast<size_t>(got) - done, static_cast<off_t>(offset + done));
            if (put < 0 && errno == EINTR)
                continue;
            if (put <= 0)
                return Error::from_errno(fmt::format("writing memory file {} at offset {}", to_what, offset + done));
            done += static_cast<size_t>(put);
        }
        offset += static_cast<uint64_t>(got);
        length -= static_cast<uint64_t>(got);
    }
    return {};
}

} // namespace

Expected<DiffApplyStats> apply_diff_memory_file(int base_fd, int diff_fd, std::string_view base_what,
                                                std::string_view diff_what) {
    auto const base_size = TRY(regular_file_size(base_fd, base_what));
    auto const diff_size = TRY(regular_file_size(diff_fd, diff_what));
    if (base_size != diff_size)
        return Error::format("memory file {} is {} bytes and diff {} is {} bytes: a diff applies only onto the memory "
                             "of the same machine",
                             base_what, base_size, diff_what, diff_size);
    DiffApplyStats stats;
    std::vector<std::byte> buffer(1 << 20);
    uint64_t offset = 0;
    while (offset < diff_size) {
        auto const data = TRY(seek(diff_fd, offset, SEEK_DATA, diff_what));
        if (!data)
            break;
        // A file always ends in a (virtual) hole, so SEEK_HOLE finds the extent's end.
        auto const hole = TRY(seek(diff_fd, *data, SEEK_HOLE, diff_what)).value_or(diff_size);
        uint64_t const end = std::min(hole, diff_size);
        TRY(copy_range(diff_fd, base_fd, *data, end - *data, buffer, diff_what, base_what));
        stats.bytes_copied += end - *data;
        ++stats.extents;
        offset = end;
    }
    if (::fsync(base_fd) != 0)
        return Error::from_errno(fmt::format("syncing memory file {}", base_what));
    return stats;
}

} // namespace kvmm

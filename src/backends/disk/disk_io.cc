#include "backends/disk/disk_io.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

namespace kvmm::disk_io {

namespace {

// The source of write_zeroes_by_writing(); zero-initialised static storage costs no memory
// until read, and reading it maps the shared zero page.
constexpr size_t ZERO_BUFFER_BYTES = 64 * 1024;
alignas(4096) std::array<std::byte, ZERO_BUFFER_BYTES> const ZERO_BUFFER {};

ssize_t transfer_once(int fd, bool is_write, iovec const* buffers, int count, uint64_t offset, int write_flags) {
    ssize_t result = 0;
    do {
        result = is_write ? ::pwritev2(fd, buffers, count, static_cast<off_t>(offset), write_flags)
                          : ::preadv(fd, buffers, count, static_cast<off_t>(offset));
    } while (result < 0 && errno == EINTR);
    return result;
}

// One preadv/pwritev for the whole request; if the kernel does less, continues segment by
// segment from where it stopped (no copy of the iovec array, so no allocation).
int32_t transfer(int fd, bool is_write, uint64_t offset, std::span<iovec const> buffers, int write_flags) {
    int64_t const total = checked_transfer_length(buffers);
    if (total < 0)
        return static_cast<int32_t>(total);
    if (total == 0)
        return 0;
    ssize_t const first =
        transfer_once(fd, is_write, buffers.data(), static_cast<int>(buffers.size()), offset, write_flags);
    if (first < 0)
        return -errno;
    auto done = static_cast<uint64_t>(first);
    size_t segment = 0;
    uint64_t skipped = done;
    while (done < static_cast<uint64_t>(total)) {
        while (skipped >= buffers[segment].iov_len) {
            skipped -= buffers[segment].iov_len;
            ++segment;
        }
        iovec const rest { static_cast<std::byte*>(buffers[segment].iov_base) + skipped,
                           buffers[segment].iov_len - skipped };
        ssize_t const more = transfer_once(fd, is_write, &rest, 1, offset + done, write_flags);
        if (more < 0)
            return -errno;
        if (more == 0) {
            if (is_write)
                return -EIO; // a device that takes no more: the write did not happen
            break;           // end of file: the read is short
        }
        done += static_cast<uint64_t>(more);
        skipped += static_cast<uint64_t>(more);
    }
    return static_cast<int32_t>(done);
}

int32_t fallocate_result(int fd, int mode, uint64_t offset, uint64_t length) {
    int result = 0;
    do {
        result = ::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length));
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : 0;
}

bool is_unsupported(int32_t result) { return result == -EOPNOTSUPP || result == -ENOSYS; }

} // namespace

int64_t checked_transfer_length(std::span<iovec const> buffers) {
    if (buffers.size() > MAX_SEGMENTS)
        return -EINVAL;
    uint64_t total = 0;
    for (auto const& buffer : buffers) {
        // Each term is checked before the sum can wrap: buffer lengths come from the guest.
        if (buffer.iov_len > MAX_TRANSFER_BYTES - total)
            return -EINVAL;
        total += buffer.iov_len;
    }
    return static_cast<int64_t>(total);
}

int32_t read(int fd, uint64_t offset, std::span<iovec const> buffers) {
    return transfer(fd, false, offset, buffers, 0);
}

int32_t write(int fd, uint64_t offset, std::span<iovec const> buffers, bool write_through) {
    return transfer(fd, true, offset, buffers, write_through ? RWF_DSYNC : 0);
}

int32_t flush(int fd) {
    int result = 0;
    do {
        result = ::fdatasync(fd);
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : 0;
}

int32_t discard(int fd, bool block_device, uint64_t offset, uint64_t length) {
    if (length == 0)
        return 0;
    if (!block_device)
        return fallocate_result(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
    uint64_t range[2] = { offset, length };
    return ::ioctl(fd, BLKDISCARD, range) < 0 ? -errno : 0;
}

int32_t write_zeroes(int fd, uint64_t offset, uint64_t length, bool may_unmap, bool write_through) {
    if (length == 0)
        return 0;
    int32_t result = -EOPNOTSUPP;
    if (may_unmap)
        result = fallocate_result(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
    if (is_unsupported(result))
        result = fallocate_result(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length);
    if (is_unsupported(result))
        return write_zeroes_by_writing(fd, offset, length, write_through);
    if (result == 0 && write_through)
        result = flush(fd);
    return result;
}

int32_t write_zeroes_by_writing(int fd, uint64_t offset, uint64_t length, bool write_through) {
    uint64_t done = 0;
    while (done < length) {
        size_t const chunk = static_cast<size_t>(std::min<uint64_t>(length - done, ZERO_BUFFER.size()));
        iovec const zeros { const_cast<std::byte*>(ZERO_BUFFER.data()), chunk };
        ssize_t const written = transfer_once(fd, true, &zeros, 1, offset + done, 0);
        if (written < 0)
            return -errno;
        if (written == 0)
            return -EIO;
        done += static_cast<uint64_t>(written);
    }
    return write_through ? flush(fd) : 0;
}

} // namespace kvmm::disk_io

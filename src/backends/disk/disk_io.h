// Synchronous disk operations on an image fd, shared by SyncEngine (which runs
// them at submit time) and IoUringEngine (for the few operations io_uring
// cannot do here: BLKDISCARD, and writing zeros where fallocate is missing).
//
// Every function returns a DiskCompletion result: the bytes transferred (0 for
// operations without data) or -errno. EINTR is retried.
//
// Threading: stateless; safe from any thread.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>

namespace kvmm::disk_io {

// The most segments one request may have: IOV_MAX, the kernel's limit for preadv/pwritev.
inline constexpr size_t MAX_SEGMENTS = 1024;
// The most bytes one request may move: Linux's MAX_RW_COUNT (INT_MAX rounded down to a page),
// so the kernel never shortens a transfer and every result fits in an int32.
inline constexpr uint64_t MAX_TRANSFER_BYTES = 0x7fff'f000;

// The total length of `buffers`, or -EINVAL when they break the limits above.
int64_t checked_transfer_length(std::span<iovec const> buffers);

// Reads into `buffers` from `offset`. A read that reaches the end of the image returns the
// bytes before the end and leaves the rest of the buffers untouched. Short reads from the
// kernel are continued, so a count below the total means end of file.
int32_t read(int fd, uint64_t offset, std::span<iovec const> buffers);

// Writes `buffers` at `offset`; with write_through, as pwritev2(RWF_DSYNC): the data is on
// stable storage when this returns, like a write followed by fdatasync().
int32_t write(int fd, uint64_t offset, std::span<iovec const> buffers, bool write_through);

// fdatasync().
int32_t flush(int fd);

// Tells the storage that [offset, offset+length) is unused: fallocate(PUNCH_HOLE|KEEP_SIZE) on
// files (reads then see zeros), ioctl(BLKDISCARD) on block devices.
int32_t discard(int fd, bool block_device, uint64_t offset, uint64_t length);

// Makes [offset, offset+length) read as zeros: fallocate(PUNCH_HOLE|KEEP_SIZE) when may_unmap
// (frees the space), else fallocate(ZERO_RANGE|KEEP_SIZE) (keeps it allocated); where the file
// system lacks the mode, by writing zeros. With write_through, fdatasync()s afterwards.
int32_t write_zeroes(int fd, uint64_t offset, uint64_t length, bool may_unmap, bool write_through);

// The last resort of write_zeroes(): pwrite()s zeros from a static buffer.
int32_t write_zeroes_by_writing(int fd, uint64_t offset, uint64_t length, bool write_through);

} // namespace kvmm::disk_io

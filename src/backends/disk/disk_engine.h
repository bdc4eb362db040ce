// DiskEngine: executes a virtio-blk device's requests on its DiskImage,
// asynchronously, on behalf of the event-loop thread.
//
// The device submits requests, each with a 64-bit tag of its choosing (e.g.
// the descriptor chain head), calls flush_submissions() once per batch (after
// it has walked its available ring), and registers completion_fd() with the
// event loop. When that fd is readable it calls reap(), which hands back
// {tag, result} pairs: result is the bytes transferred (0 for flush, discard
// and write_zeroes) or -errno.
//
// Contract:
//   - Submission fails (Error with errno EAGAIN) only when `capacity()`
//     requests are in flight; reap and retry. Every other problem is reported
//     as a completion: -EINVAL for more than disk_io::MAX_SEGMENTS segments or
//     more than disk_io::MAX_TRANSFER_BYTES bytes, -EROFS for writes, discards
//     and write-zeroes on a read-only image.
//   - The iovec array is copied at submission; the memory it points to (guest
//     memory) must stay valid until the request's completion is reaped.
//   - Reads that run past the end of the image complete with the count of
//     bytes before the end (0 when starting at or past it), the rest of the
//     buffers untouched; writes past the end grow a file image. The device
//     rejects such requests before they get here; the engine does not check
//     bounds.
//   - A result is either the full length, -errno, or - only for a read that
//     reaches the end of the image - a short count. Short transfers from the
//     kernel are continued by the engine, never reported.
//   - Write-through (constructor flag): a write completes only once its data
//     is on stable storage (pwritev2 with RWF_DSYNC, which is what fdatasync
//     after the write would give); write_zeroes is followed by fdatasync.
//
// Threading: an engine is used by one thread (the device's event loop). It
// must not outlive its DiskImage.
#pragma once

#include "backends/disk/disk_image.h"
#include "base/expected.h"

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace kvmm {

struct DiskCompletion {
    uint64_t tag { 0 };
    int32_t result { 0 }; // bytes transferred, or -errno

    bool operator==(DiskCompletion const&) const = default;
};

enum class DiskEngineKind { IoUring, Sync };

class DiskEngine {
public:
    virtual ~DiskEngine() = default;

    virtual Expected<void> read(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) = 0;
    virtual Expected<void> write(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) = 0;
    // Makes completed writes durable (fdatasync).
    virtual Expected<void> flush(uint64_t tag) = 0;
    // See disk_io::discard and disk_io::write_zeroes for the system calls used.
    virtual Expected<void> discard(uint64_t tag, uint64_t offset, uint64_t length) = 0;
    virtual Expected<void> write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) = 0;

    // Hands the requests submitted since the last call to the kernel (one system call for the
    // whole batch). Requests are not started before this is called.
    virtual Expected<void> flush_submissions() = 0;

    // An eventfd, readable while completions wait to be reaped.
    virtual int completion_fd() const = 0;

    // Moves up to out.size() completions into `out` and returns how many; allocation-free.
    // completion_fd() stays readable while more are left, so one call per wake-up is enough.
    virtual size_t reap(std::span<DiskCompletion> out) = 0;

    // Convenience for tests and cold paths: every completion ready now.
    std::vector<DiskCompletion> reap_all();

    // The most requests in flight (submitted and not yet reaped) at once.
    virtual unsigned capacity() const = 0;
    virtual unsigned in_flight() const = 0;
    virtual DiskEngineKind kind() const = 0;
};

// Creates an engine of `kind` for `image` with room for `queue_depth` requests (1..4096). An
// IoUring engine whose ring cannot be set up (an old kernel, a seccomp filter, a memlock
// limit) falls back to a Sync engine, with one warning in the log.
Expected<std::unique_ptr<DiskEngine>> create_engine(DiskEngineKind kind, DiskImage& image, bool write_through,
                                                    unsigned queue_depth);

// Test hook: while `error_number` is not 0, setting up an io_uring fails with it, as it would
// under a seccomp filter (EPERM) or on a kernel without io_uring (ENOSYS).
void fail_io_uring_setup_for_testing(int error_number);

} // namespace kvmm

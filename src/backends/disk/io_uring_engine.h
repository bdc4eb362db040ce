// IoUringEngine: the DiskEngine on io_uring (liburing). Requests become SQEs
// (READV, WRITEV, FSYNC with IORING_FSYNC_DATASYNC, FALLOCATE) that are handed
// to the kernel in one io_uring_submit() per batch by flush_submissions();
// the ring's completions signal an eventfd registered with
// io_uring_register_eventfd(). The ring is restricted (restricted_ring.h): those four
// opcodes only, on the image registered as fixed file 0, no register operation after start.
//
// No allocation per request: a table of `queue_depth` request slots, each
// with its own copy of the iovec array (which io_uring may read after submit
// returns to the caller), and a free-slot stack are allocated up front; a
// slot's iovec storage grows only the first time it sees a request with more
// segments than before (16 reserved, at most disk_io::MAX_SEGMENTS). The
// SQ has at least queue_depth entries and a request holds one SQE at a time,
// so an SQE is always available while capacity() is not reached.
//
// Short transfers are continued: the slot's iovec copy is advanced past what
// was done and the rest is resubmitted from reap(), so the caller sees a
// short count only for a read that reached the end of the image. -EAGAIN and
// -EINTR results are resubmitted likewise.
//
// Done without the ring, on the calling thread: BLKDISCARD on block devices
// (io_uring of liburing 2.3 has no ioctl operation), write-zeroes by writing
// where the file system refuses fallocate (a rare path), and requests refused
// before any I/O (-EINVAL, -EROFS). Their completions are queued and the
// eventfd is signalled as for the ring's own.
//
// Threading: one thread, as every DiskEngine.
#pragma once

#include "backends/disk/completion_queue.h"
#include "backends/disk/disk_engine.h"
#include "base/event_fd.h"

#include <cstdint>
#include <vector>

struct io_uring;

namespace kvmm {

class IoUringEngine final : public DiskEngine {
public:
    // Fails (naming the errno) when the ring cannot be set up; create_engine() then falls back.
    static Expected<std::unique_ptr<IoUringEngine>> create(DiskImage& image, bool write_through, unsigned queue_depth);
    // Tears the ring down; the kernel finishes or cancels what is in flight first.
    ~IoUringEngine() override;

    IoUringEngine(IoUringEngine const&) = delete;
    IoUringEngine& operator=(IoUringEngine const&) = delete;

    Expected<void> read(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) override;
    Expected<void> write(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) override;
    Expected<void> flush(uint64_t tag) override;
    Expected<void> discard(uint64_t tag, uint64_t offset, uint64_t length) override;
    Expected<void> write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) override;
    Expected<void> flush_submissions() override;

    int completion_fd() const override { return m_event.fd(); }
    size_t reap(std::span<DiskCompletion> out) override;

    unsigned capacity() const override { return m_capacity; }
    unsigned in_flight() const override { return m_in_flight; }
    DiskEngineKind kind() const override { return DiskEngineKind::IoUring; }

private:
    enum class Operation : uint8_t { Read, Write, Flush, Discard, WriteZeroes, SyncAfterWriteZeroes };

    struct Request {
        Operation operation { Operation::Read };
        bool may_unmap { false };
        uint64_t tag { 0 };
        uint64_t offset { 0 };
        uint64_t length { 0 };      // bytes to transfer (or to discard / zero)
        uint64_t done { 0 };        // bytes transferred so far
        size_t first_segment { 0 }; // the first segment not yet fully transferred
        std::vector<iovec> segments;
    };

    IoUringEngine(DiskImage& image, bool write_through, unsigned queue_depth, EventFd event,
                  std::unique_ptr<io_uring> ring);

    Expected<void> reserve();
    void complete_locally(uint64_t tag, int32_t result);
    Expected<void> submit_transfer(Operation operation, uint64_t tag, uint64_t offset, std::span<iovec const> buffers);
    uint32_t take_slot();
    void prepare(uint32_t slot);
    // Handles one ring completion; returns true when the request is finished (with `result`),
    // false when it was resubmitted.
    bool on_ring_completion(uint32_t slot, int32_t ring_result, int32_t& result);

    DiskImage& m_image;
    bool m_write_through { false };
    unsigned m_capacity { 0 };
    unsigned m_in_flight { 0 };
    EventFd m_event;
    std::unique_ptr<io_uring> m_ring;
    std::vector<Request> m_requests;
    std::vector<uint32_t> m_free_slots;
    CompletionQueue m_local_completions;
};

} // namespace kvmm

#include "backends/disk/io_uring_engine.h"

#include "backends/disk/disk_io.h"
#include "backends/disk/restricted_ring.h"

#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include <atomic>
#include <cerrno>

namespace kvmm {

namespace {

// Segments reserved per slot up front: virtio-blk requests from Linux rarely carry more.
constexpr size_t INITIAL_SEGMENTS_PER_SLOT = 16;

std::atomic<int> g_forced_setup_error { 0 };

} // namespace

void fail_io_uring_setup_for_testing(int error_number) { g_forced_setup_error.store(error_number); }

Expected<std::unique_ptr<IoUringEngine>> IoUringEngine::create(DiskImage& image, bool write_through,
                                                               unsigned queue_depth) {
    if (queue_depth == 0)
        return Error::format("disk '{}': queue depth 0: the engine needs room for one request", image.path());
    if (int const forced = g_forced_setup_error.load(); forced != 0)
        return Error::from_errno("io_uring_queue_init", forced);

    auto event = EventFd::create();
    if (!event)
        return event.release_error().with_context("disk completion eventfd");
    auto ring = std::make_unique<io_uring>();
    TRY(set_up_restricted_ring(*ring, queue_depth, image.fd(), event->fd())
            .with_context(fmt::format("disk '{}': the restricted io_uring", image.path())));
    return std::unique_ptr<IoUringEngine>(
        new IoUringEngine(image, write_through, queue_depth, std::move(*event), std::move(ring)));
}

IoUringEngine::IoUringEngine(DiskImage& image, bool write_through, unsigned queue_depth, EventFd event,
                             std::unique_ptr<io_uring> ring)
    : m_image(image), m_write_through(write_through), m_capacity(queue_depth), m_event(std::move(event)),
      m_ring(std::move(ring)), m_requests(queue_depth), m_local_completions(queue_depth) {
    m_free_slots.reserve(queue_depth);
    for (uint32_t slot = queue_depth; slot > 0; --slot)
        m_free_slots.push_back(slot - 1);
    for (auto& request : m_requests)
        request.segments.reserve(INITIAL_SEGMENTS_PER_SLOT);
}

IoUringEngine::~IoUringEngine() {
    // The registered image goes now, not when the kernel gets round to freeing the closed
    // ring: a drive move or the next open of the image must find its lock released.
    (void)::io_uring_unregister_files(m_ring.get());
    ::io_uring_queue_exit(m_ring.get());
}

Expected<void> IoUringEngine::reserve() {
    if (m_in_flight >= m_capacity)
        return Error(fmt::format("disk '{}': {} requests in flight, the io_uring engine is full", m_image.path(),
                                 m_in_flight),
                     EAGAIN);
    ++m_in_flight;
    return {};
}

void IoUringEngine::complete_locally(uint64_t tag, int32_t result) {
    bool const was_empty = m_local_completions.empty();
    m_local_completions.push({ tag, result }); // reserve() made room: at most capacity in flight
    if (was_empty)
        (void)m_event.signal();
}

uint32_t IoUringEngine::take_slot() {
    // reserve() succeeded, so fewer than capacity slots are taken.
    uint32_t const slot = m_free_slots.back();
    m_free_slots.pop_back();
    return slot;
}

// Fills an SQE for the slot's current state. Never fails: see the header on SQ sizing.
void IoUringEngine::prepare(uint32_t slot) {
    Request& request = m_requests[slot];
    io_uring_sqe* sqe = ::io_uring_get_sqe(m_ring.get());
    // The image is the ring's only registered file (restricted_ring.h): every SQE names it by
    // index, with IOSQE_FIXED_FILE, which the ring requires.
    int const fd = static_cast<int>(RESTRICTED_RING_FILE_INDEX);
    switch (request.operation) {
    case Operation::Read:
    case Operation::Write: {
        auto const segment_count = static_cast<unsigned>(request.segments.size() - request.first_segment);
        iovec const* segments = request.segments.data() + request.first_segment;
        uint64_t const position = request.offset + request.done;
        if (request.operation == Operation::Read)
            ::io_uring_prep_readv(sqe, fd, segments, segment_count, position);
        else
            ::io_uring_prep_writev2(sqe, fd, segments, segment_count, position, m_write_through ? RWF_DSYNC : 0);
        break;
    }
    case Operation::Flush:
    case Operation::SyncAfterWriteZeroes:
        ::io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        break;
    case Operation::Discard:
        ::io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                  static_cast<off_t>(request.offset), static_cast<off_t>(request.length));
        break;
    case Operation::WriteZeroes: {
        int const mode =
            request.may_unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
        ::io_uring_prep_fallocate(sqe, fd, mode, static_cast<off_t>(request.offset),
                                  static_cast<off_t>(request.length));
        break;
    }
    }
    ::io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
    ::io_uring_sqe_set_data64(sqe, slot);
}

Expected<void> IoUringEngine::submit_transfer(Operation operation, uint64_t tag, uint64_t offset,
                                              std::span<iovec const> buffers) {
    TRY(reserve());
    if (operation == Operation::Write && m_image.read_only()) {
        complete_locally(tag, -EROFS);
        return {};
    }
    int64_t const length = disk_io::checked_transfer_length(buffers);
    if (length <= 0) {
        complete_locally(tag, static_cast<int32_t>(length)); // -EINVAL, or 0 for an empty transfer
        return {};
    }
    uint32_t const slot = take_slot();
    Request& request = m_requests[slot];
    request.operation = operation;
    request.tag = tag;
    request.offset = offset;
    request.length = static_cast<uint64_t>(length);
    request.done = 0;
    request.first_segment = 0;
    request.segments.assign(buffers.begin(), buffers.end());
    prepare(slot);
    return {};
}

Expected<void> IoUringEngine::read(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) {
    return submit_transfer(Operation::Read, tag, offset, buffers);
}

Expected<void> IoUringEngine::write(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) {
    return submit_transfer(Operation::Write, tag, offset, buffers);
}

Expected<void> IoUringEngine::flush(uint64_t tag) {
    TRY(reserve());
    uint32_t const slot = take_slot();
    m_requests[slot].operation = Operation::Flush;
    m_requests[slot].tag = tag;
    prepare(slot);
    return {};
}

Expected<void> IoUringEngine::discard(uint64_t tag, uint64_t offset, uint64_t length) {
    TRY(reserve());
    if (m_image.read_only()) {
        complete_locally(tag, -EROFS);
        return {};
    }
    if (length == 0 || m_image.is_block_device()) {
        complete_locally(tag, disk_io::discard(m_image.fd(), m_image.is_block_device(), offset, length));
        return {};
    }
    uint32_t const slot = take_slot();
    Request& request = m_requests[slot];
    request.operation = Operation::Discard;
    request.tag = tag;
    request.offset = offset;
    request.length = length;
    prepare(slot);
    return {};
}

Expected<void> IoUringEngine::write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) {
    TRY(reserve());
    if (m_image.read_only()) {
        complete_locally(tag, -EROFS);
        return {};
    }
    if (length == 0) {
        complete_locally(tag, 0);
        return {};
    }
    uint32_t const slot = take_slot();
    Request& request = m_requests[slot];
    request.operation = Operation::WriteZeroes;
    request.may_unmap = may_unmap;
    request.tag = tag;
    request.offset = offset;
    request.length = length;
    prepare(slot);
    return {};
}

Expected<void> IoUringEngine::flush_submissions() {
    // With SUBMIT_ALL one call takes the whole batch; without it the kernel stops at an SQE
    // that fails to start (it still posts that SQE's completion), so go on with the rest.
    while (::io_uring_sq_ready(m_ring.get()) > 0) {
        int const submitted = ::io_uring_submit(m_ring.get());
        if (submitted < 0)
            return Error::from_errno(fmt::format("disk '{}': io_uring_submit", m_image.path()), -submitted);
        if (submitted == 0)
            break;
    }
    return {};
}

bool IoUringEngine::on_ring_completion(uint32_t slot, int32_t ring_result, int32_t& result) {
    Request& request = m_requests[slot];
    if (ring_result == -EAGAIN || ring_result == -EINTR) {
        prepare(slot);
        return false;
    }
    switch (request.operation) {
    case Operation::Read:
    case Operation::Write: {
        if (ring_result < 0) {
            result = ring_result;
            return true;
        }
        if (ring_result == 0) {
            // End of file for a read (short result); a write that moved nothing failed.
            result = request.operation == Operation::Read ? static_cast<int32_t>(request.done) : -EIO;
            return true;
        }
        request.done += static_cast<uint64_t>(ring_result);
        if (request.done >= request.length) {
            result = static_cast<int32_t>(request.done);
            return true;
        }
        // Short transfer: skip what was done in the slot's own iovec copy and resubmit the rest.
        auto remaining = static_cast<uint64_t>(ring_result);
        while (remaining > 0) {
            iovec& segment = request.segments[request.first_segment];
            if (remaining >= segment.iov_len) {
                remaining -= segment.iov_len;
                ++request.first_segment;
            } else {
                segment.iov_base = static_cast<std::byte*>(segment.iov_base) + remaining;
                segment.iov_len -= remaining;
                remaining = 0;
            }
        }
        prepare(slot);
        return false;
    }
    case Operation::Flush:
    case Operation::Discard:
    case Operation::SyncAfterWriteZeroes:
        result = ring_result;
        return true;
    case Operation::WriteZeroes:
        if (ring_result == -EOPNOTSUPP || ring_result == -ENOSYS) {
            // The file system lacks this fallocate mode: the synchronous path tries the other
            // mode, then writes zeros (and syncs when write-through).
            result =
                disk_io::write_zeroes(m_image.fd(), request.offset, request.length, request.may_unmap, m_write_through);
            return true;
        }
        if (ring_result == 0 && m_write_through) {
            request.operation = Operation::SyncAfterWriteZeroes;
            prepare(slot);
            return false;
        }
        result = ring_result;
        return true;
    }
    result = -EIO;
    return true;
}

size_t IoUringEngine::reap(std::span<DiskCompletion> out) {
    (void)m_event.consume(); // EAGAIN when already clear
    size_t count = 0;
    while (count < out.size() && m_local_completions.pop(out[count])) {
        ++count;
        --m_in_flight;
    }
    bool resubmitted = false;
    while (count < out.size()) {
        io_uring_cqe* cqe = nullptr;
        if (::io_uring_peek_cqe(m_ring.get(), &cqe) != 0 || cqe == nullptr)
            break;
        auto const slot = static_cast<uint32_t>(::io_uring_cqe_get_data64(cqe));
        int32_t const ring_result = cqe->res;
        ::io_uring_cqe_seen(m_ring.get(), cqe);
        int32_t result = 0;
        if (!on_ring_completion(slot, ring_result, result)) {
            resubmitted = true;
            continue;
        }
        out[count++] = { m_requests[slot].tag, result };
        m_free_slots.push_back(slot);
        --m_in_flight;
    }
    if (resubmitted)
        // A failure leaves the SQEs in the ring; the next flush_submissions() retries them.
        (void)flush_submissions();
    if (!m_local_completions.empty() || ::io_uring_cq_ready(m_ring.get()) > 0)
        (void)m_event.signal();
    return count;
}

} // namespace kvmm

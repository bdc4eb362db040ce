// Qcow2Engine: the DiskEngine of a qcow2 image. It translates each request
// with the image's qcow2::Image and hands the data of allocated clusters to an
// inner raw engine (io_uring or sync, as configured) on the same fd, so reads
// and in-place writes of allocated clusters keep the raw path's asynchrony.
// Everything else runs synchronously on the calling (event-loop) thread and is
// bounded by the request: zeros, backing-file reads, compressed clusters,
// allocating writes (copy-on-write of at most the two partial end clusters),
// metadata reads on cache misses, and metadata write-back on flush or when a
// cache is full of dirty tables.
//
// A request becomes one "parent" and as many inner requests as it has
// contiguous host extents; it completes when the last of them does. When the
// inner engine lacks room for a request's extents, that request is done
// synchronously instead, so the only EAGAIN is this engine's own capacity.
// Discard and write-zeroes free clusters that in-place writes in flight may
// still target: they first wait for the inner engine to go idle, so a freed
// cluster is never reused under a write that is still landing.
//
// completion_fd() is the inner engine's eventfd: requests finished here are
// announced by signalling that same eventfd (one more wake-up source would
// cost a nested epoll or a second registration per request). The inner
// engine's reap() may consume such a signal, so reap() and wait_for_inner()
// signal again while local completions are left.
//
// Threading: one thread, as every DiskEngine.
#pragma once

#include "backends/disk/completion_queue.h"
#include "backends/disk/disk_engine.h"

#include <vector>

namespace kvmm {

namespace qcow2 {
class Image;
}

class Qcow2Engine final : public DiskEngine {
public:
    static Expected<std::unique_ptr<Qcow2Engine>> create(std::unique_ptr<DiskEngine> inner, DiskImage& image,
                                                         bool write_through, unsigned queue_depth);

    Expected<void> read(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) override;
    Expected<void> write(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) override;
    Expected<void> flush(uint64_t tag) override;
    Expected<void> discard(uint64_t tag, uint64_t offset, uint64_t length) override;
    Expected<void> write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) override;
    Expected<void> flush_submissions() override { return m_inner->flush_submissions(); }

    int completion_fd() const override { return m_inner->completion_fd(); }
    size_t reap(std::span<DiskCompletion> out) override;

    unsigned capacity() const override { return m_capacity; }
    unsigned in_flight() const override { return m_in_flight; }
    DiskEngineKind kind() const override { return m_inner->kind(); }

private:
    struct Parent {
        uint64_t tag { 0 };
        uint32_t pending { 0 };  // inner requests not yet completed
        int32_t result { 0 };    // the request's length, or the first -errno
        uint64_t expected { 0 }; // bytes the inner requests should move
        uint64_t done { 0 };     // bytes they moved
    };
    struct Piece {
        uint64_t host_offset { 0 };
        uint64_t position { 0 }; // in the request's buffers
        uint64_t length { 0 };
    };

    Qcow2Engine(std::unique_ptr<DiskEngine> inner, DiskImage& image, bool write_through, unsigned queue_depth);

    Expected<void> reserve();
    void complete_locally(uint64_t tag, int32_t result);
    // Discard and write-zeroes: a change of metadata only, made synchronously once the inner
    // engine is idle (refused on a read-only image), flushed under write-through, completed
    // locally with `change`'s result.
    template <typename Change>
    Expected<void> change_clusters(uint64_t tag, Change change);
    void signal_local();
    Expected<void> transfer(bool is_write, uint64_t tag, uint64_t offset, std::span<iovec const> buffers);
    // Reaps inner completions into their parents until the inner engine is idle.
    Expected<void> wait_for_inner();
    // Takes up to `limit` inner completions; finished parents go to `out` or, without room, to
    // the local queue.
    size_t take_inner(std::span<DiskCompletion> out, size_t limit);

    std::unique_ptr<DiskEngine> m_inner;
    DiskImage& m_image;
    qcow2::Image& m_layer;
    bool m_write_through { false };
    unsigned m_capacity { 0 };
    unsigned m_in_flight { 0 };
    std::vector<Parent> m_parents;
    std::vector<uint32_t> m_free_parents;
    CompletionQueue m_local_completions;
    std::vector<Piece> m_pieces;
    std::vector<iovec> m_slice;
};

} // namespace kvmm

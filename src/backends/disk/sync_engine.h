// SyncEngine: the DiskEngine that does each request's system call at submit
// time, on the calling (event-loop) thread, and queues its completion. It is
// the fallback where io_uring is unavailable and the simple reference the
// io_uring engine is tested against. A slow disk stalls the event loop for
// the duration of the call - the price of the fallback.
//
// Threading: one thread, as every DiskEngine.
#pragma once

#include "backends/disk/completion_queue.h"
#include "backends/disk/disk_engine.h"
#include "base/event_fd.h"

namespace kvmm {

class SyncEngine final : public DiskEngine {
public:
    // `queue_depth` completions may wait to be reaped; see DiskEngine for write_through.
    static Expected<std::unique_ptr<SyncEngine>> create(DiskImage& image, bool write_through, unsigned queue_depth);

    Expected<void> read(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) override;
    Expected<void> write(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) override;
    Expected<void> flush(uint64_t tag) override;
    Expected<void> discard(uint64_t tag, uint64_t offset, uint64_t length) override;
    Expected<void> write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) override;
    // Nothing to do: requests ran when they were submitted.
    Expected<void> flush_submissions() override { return {}; }

    int completion_fd() const override { return m_event.fd(); }
    size_t reap(std::span<DiskCompletion> out) override;

    unsigned capacity() const override { return m_capacity; }
    unsigned in_flight() const override { return static_cast<unsigned>(m_completions.size()); }
    DiskEngineKind kind() const override { return DiskEngineKind::Sync; }

private:
    SyncEngine(DiskImage& image, bool write_through, unsigned queue_depth, EventFd event)
        : m_image(image), m_write_through(write_through), m_capacity(queue_depth), m_event(std::move(event)),
          m_completions(queue_depth) {}

    Expected<void> check_room() const;
    void complete(uint64_t tag, int32_t result);

    DiskImage& m_image;
    bool m_write_through { false };
    unsigned m_capacity { 0 };
    EventFd m_event;
    CompletionQueue m_completions;
};

} // namespace kvmm

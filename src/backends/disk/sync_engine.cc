#include "backends/disk/sync_engine.h"

#include "backends/disk/disk_io.h"

#include <cerrno>

namespace kvmm {

Expected<std::unique_ptr<SyncEngine>> SyncEngine::create(DiskImage& image, bool write_through, unsigned queue_depth) {
    if (queue_depth == 0)
        return Error::format("disk '{}': queue depth 0: the engine needs room for one request", image.path());
    auto event = TRY(EventFd::create().with_context("disk completion eventfd"));
    return std::unique_ptr<SyncEngine>(new SyncEngine(image, write_through, queue_depth, std::move(event)));
}

Expected<void> SyncEngine::check_room() const {
    if (m_completions.size() >= m_capacity)
        return Error(fmt::format("disk '{}': {} completions wait to be reaped, the engine is full", m_image.path(),
                                 m_completions.size()),
                     EAGAIN);
    return {};
}

void SyncEngine::complete(uint64_t tag, int32_t result) {
    bool const was_empty = m_completions.empty();
    m_completions.push({ tag, result }); // check_room() made room
    // One signal per batch: the fd stays readable until reap() empties the queue.
    if (was_empty)
        (void)m_event.signal();
}

Expected<void> SyncEngine::read(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) {
    TRY(check_room());
    complete(tag, disk_io::read(m_image.fd(), offset, buffers));
    return {};
}

Expected<void> SyncEngine::write(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) {
    TRY(check_room());
    if (m_image.read_only()) {
        complete(tag, -EROFS);
        return {};
    }
    complete(tag, disk_io::write(m_image.fd(), offset, buffers, m_write_through));
    return {};
}

Expected<void> SyncEngine::flush(uint64_t tag) {
    TRY(check_room());
    complete(tag, disk_io::flush(m_image.fd()));
    return {};
}

Expected<void> SyncEngine::discard(uint64_t tag, uint64_t offset, uint64_t length) {
    TRY(check_room());
    if (m_image.read_only()) {
        complete(tag, -EROFS);
        return {};
    }
    complete(tag, disk_io::discard(m_image.fd(), m_image.is_block_device(), offset, length));
    return {};
}

Expected<void> SyncEngine::write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) {
    TRY(check_room());
    if (m_image.read_only()) {
        complete(tag, -EROFS);
        return {};
    }
    complete(tag, disk_io::write_zeroes(m_image.fd(), offset, length, may_unmap, m_write_through));
    return {};
}

size_t SyncEngine::reap(std::span<DiskCompletion> out) {
    (void)m_event.consume(); // EAGAIN when already clear
    size_t count = 0;
    while (count < out.size() && m_completions.pop(out[count]))
        ++count;
    if (!m_completions.empty())
        (void)m_event.signal();
    return count;
}

} // namespace kvmm

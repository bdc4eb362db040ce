#include "backends/disk/disk_engine.h"

#include "backends/disk/io_uring_engine.h"
#include "backends/disk/qcow2_engine.h"
#include "backends/disk/sync_engine.h"

#include <spdlog/spdlog.h>

#include <array>

namespace kvmm {

namespace {

// More is pointless: a virtqueue holds at most 32768 descriptors, and Linux's virtio-blk
// driver keeps at most a queue's worth in flight; 4096 keeps the preallocation modest.
constexpr unsigned MAX_QUEUE_DEPTH = 4096;

} // namespace

std::vector<DiskCompletion> DiskEngine::reap_all() {
    std::vector<DiskCompletion> all;
    std::array<DiskCompletion, 64> batch {};
    size_t count = 0;
    do {
        count = reap(batch);
        all.insert(all.end(), batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(count));
    } while (count == batch.size());
    return all;
}

namespace {

Expected<std::unique_ptr<DiskEngine>> create_file_engine(DiskEngineKind kind, DiskImage& image, bool write_through,
                                                         unsigned queue_depth) {
    if (kind == DiskEngineKind::IoUring) {
        auto engine = IoUringEngine::create(image, write_through, queue_depth);
        if (engine)
            return std::unique_ptr<DiskEngine>(std::move(*engine));
        spdlog::warn("disk '{}': io_uring is unavailable ({}); using synchronous I/O on the event-loop thread",
                     image.path(), engine.error().message());
    }
    auto engine = TRY(SyncEngine::create(image, write_through, queue_depth));
    return std::unique_ptr<DiskEngine>(std::move(engine));
}

} // namespace

Expected<std::unique_ptr<DiskEngine>> create_engine(DiskEngineKind kind, DiskImage& image, bool write_through,
                                                    unsigned queue_depth) {
    if (queue_depth == 0 || queue_depth > MAX_QUEUE_DEPTH)
        return Error::format("disk '{}': queue depth {} is outside 1..{}", image.path(), queue_depth, MAX_QUEUE_DEPTH);
    if (image.format() == DiskFormat::Raw)
        return create_file_engine(kind, image, write_through, queue_depth);
    // A request may split into one inner request per contiguous host extent: give the inner
    // engine room for several per request (a request that still does not fit runs synchronously).
    unsigned const inner_depth = std::min(MAX_QUEUE_DEPTH, queue_depth * 4);
    auto inner = TRY(create_file_engine(kind, image, write_through, inner_depth));
    auto engine = TRY(Qcow2Engine::create(std::move(inner), image, write_through, queue_depth));
    return std::unique_ptr<DiskEngine>(std::move(engine));
}

} // namespace kvmm

// BlockDevice: the virtio block device (virtio 1.2 section 5.2) on a raw disk
// image, executed by a DiskEngine (io_uring, or synchronous I/O as fallback).
//
// One request queue. Each chain is one request (5.2.6): a 16-byte header
// {type, reserved, sector} in device-readable memory, the data, and one status
// byte, the last device-writable byte. Data buffers go to the engine as host
// iovecs straight into guest memory (GuestMemory::host_ranges, no copy); the
// chain head is the engine's tag, and a preallocated table indexed by head
// remembers what each in-flight request needs to be answered.
//
// The driver is untrusted: every request is validated before any I/O, by the
// pure parser in block_request.h (header size, data direction, 512-byte
// multiples, overflow-checked range against the capacity, read-only disks,
// discard/write-zeroes segments). A bad request is
// answered with IOERR or UNSUPP and one rate-limited log line; the device keeps
// working. Only a broken ring (a queue Error) puts the device into
// DEVICE_NEEDS_RESET.
//
// Back-pressure: when the engine is full the device stops popping and resumes
// when completions are reaped; when the optional rate limiter refuses a
// request, the chain is put back and the queue resumes from the limiter's timer.
//
// Reset: in-flight requests hold iovecs into guest memory, and the guest must
// not be told that a reset is done while host I/O can still write into its
// buffers. reset() (and the destructor) therefore wait synchronously, bounded
// by RESET_DRAIN_TIMEOUT, for every in-flight request to complete, and drop the
// results. This blocks the event-loop thread for at most the time the host
// disk takes to finish queue-size requests; it never blocks a vCPU thread.
//
// Threading: see VirtioDevice. read_config() reads only state fixed at
// construction. The counters are atomics so a metrics reader on another thread
// may read them. The EventLoop must outlive the device.
#pragma once

#include "backends/disk/disk_engine.h"
#include "backends/disk/disk_image.h"
#include "backends/disk/write_recorder.h"
#include "base/event_loop.h"
#include "base/rate_limited_log.h"
#include "base/rate_limiter.h"
#include "base/thread_annotations.h"
#include "devices/virtio/block/block_request.h"
#include "devices/virtio/device_state.h"
#include "devices/virtio/virtio_device_base.h"

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace kvmm::virtio {

// Feature bits of the block device (5.2.3).
inline constexpr unsigned BLOCK_FEATURE_SIZE_MAX = 1;
inline constexpr unsigned BLOCK_FEATURE_SEG_MAX = 2;
inline constexpr unsigned BLOCK_FEATURE_RO = 5;
inline constexpr unsigned BLOCK_FEATURE_BLK_SIZE = 6;
inline constexpr unsigned BLOCK_FEATURE_FLUSH = 9;
inline constexpr unsigned BLOCK_FEATURE_DISCARD = 13;
inline constexpr unsigned BLOCK_FEATURE_WRITE_ZEROES = 14;

struct BlockOptions {
    DiskEngineKind engine { DiskEngineKind::IoUring };
    // Write-through: every write is durable when it completes, so FLUSH is not offered.
    bool write_through { false };
    // Answer to GET_ID (at most 20 bytes are used); default: the image's device_id().
    std::optional<std::string> serial;
    std::optional<RateLimiter> rate_limiter;
    // Write recording (backends/disk/write_recorder.h; test and debugging use): every write,
    // discard, write-zeroes and flush the device completes successfully is appended, in
    // completion order, to this new file. Off when empty.
    std::optional<std::string> record_path;
};

// The block device's saved state (docs/ARCHITECTURE.md "Saved state"): what a device built from
// the same configuration needs to go on where this one stopped.
//   - offered_features: a fingerprint of the configuration (read-only, write-through);
//   - capacity_sectors: the drive's size as the guest knows it, so a restore onto an image of
//     another size (a different or resized file) is refused rather than shown to the guest;
//   - config_generation: the ConfigGeneration register, which a driver may be comparing;
//   - active: negotiated features and the request queue's progress.
// Deliberately not saved: requests in flight on the host (save() refuses while there are any:
// their data is host I/O that a state cannot carry); the image path, serial and engine (the
// configuration rebuilds them); the rate limiter's buckets (the limiter belongs to the
// configuration and its owner saves its state; a chain the limiter deferred is back on the
// available ring, so nothing of it is lost); the counters (metrics of this process).
struct BlockState {
    static constexpr std::string_view SECTION = "virtio-blk";
    static constexpr uint32_t VERSION = 1;

    uint64_t offered_features { 0 };
    uint64_t capacity_sectors { 0 };
    uint32_t config_generation { 0 };
    std::optional<ActiveDeviceState> active;

    bool operator==(BlockState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<BlockState> decode(StateReader& reader);
};

class BlockDevice final : public VirtioDeviceBase {
public:
    static constexpr uint16_t QUEUE_SIZE = 256;
    static constexpr uint64_t SECTOR_SIZE = BLOCK_SECTOR_SIZE;
    // Data segments per request (config seg_max): the queue size less header and status. Even
    // if every segment is split by host_ranges(), a request stays within the engine's limit.
    static constexpr uint32_t SEG_MAX = QUEUE_SIZE - 2;
    // Largest data segment (config size_max). With seg_max it bounds a request, so a driver
    // cannot make one request cost seconds of host I/O (e.g. gigabytes read into one aliased
    // buffer); Linux splits its requests to fit, and QEMU's default limits are no larger.
    static constexpr uint32_t SIZE_MAX_BYTES = 128 * 1024;
    static constexpr uint64_t MAX_REQUEST_BYTES = uint64_t { SEG_MAX } * SIZE_MAX_BYTES;
    // What one event-loop turn may start (the sync engine performs it on that thread) and what
    // may be in flight at once (a stop waits for in-flight I/O before guest memory goes).
    static constexpr uint64_t MAX_BYTES_PER_WAKEUP = 16ull << 20;
    static constexpr uint64_t MAX_IN_FLIGHT_BYTES = 64ull << 20;
    static constexpr uint32_t MAX_DISCARD_SECTORS = 1u << 22; // 2 GiB per request
    // Write-zeroes falls back to writing zeros where the file system cannot zero a range
    // (tmpfs without FALLOC_FL_ZERO_RANGE), and the sync engine does that on the event loop:
    // keep one request as small as the largest data request.
    static constexpr uint32_t MAX_WRITE_ZEROES_SECTORS = 1u << 16; // 32 MiB per request
    static constexpr uint32_t DISCARD_SECTOR_ALIGNMENT = 8;        // 4 KiB, the file system block
    static constexpr size_t ID_BYTES = BLOCK_ID_BYTES;
    static constexpr size_t CONFIG_SIZE = 60; // through write_zeroes_may_unmap and its padding
    static constexpr std::chrono::seconds RESET_DRAIN_TIMEOUT { 30 };

    // Takes ownership of `image`, creates its engine (queue depth QUEUE_SIZE) and registers the
    // engine's completion fd and the limiter's timer fd in `event_loop`.
    static Expected<std::unique_ptr<BlockDevice>> create(DiskImage image, EventLoop& event_loop, BlockOptions options);
    ~BlockDevice() override;
    BlockDevice(BlockDevice const&) = delete;
    BlockDevice& operator=(BlockDevice const&) = delete;

    DeviceType type() const override { return DeviceType::Block; }
    uint64_t features() const override { return m_features; }
    std::span<uint16_t const> queue_max_sizes() const override { return m_queue_sizes; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Expected<void> activate(ActivationContext context) override;
    void process_queue(size_t index) override;
    void reset() override;

    uint32_t config_generation() const override { return m_config_generation.load(std::memory_order_acquire); }

    // Saved state (block_device_state.cc). save() refuses while requests are in flight on the
    // host, saying how many: the caller pauses the VM and lets them complete first
    // (complete_in_flight()). restore() puts a device that is not active back where the saved
    // one was: the capacity must match, `context` is present exactly when the saved device was
    // active (its queue freshly created by the transport), and a refusal changes nothing. After
    // a restore of an active device the queue is served from its next process_queue(); the
    // device asks for that turn itself (ActivationContext::reschedule).
    Expected<BlockState> save() const;
    Expected<void> restore(BlockState const& state, std::optional<ActivationContext> context);
    Expected<void> save_state(StateWriter& writer) const override;
    Expected<void> restore_state(StateReader& reader, std::optional<ActivationContext> context) override;
    // Waits (at most RESET_DRAIN_TIMEOUT) for every request in flight on the host and answers
    // it, so that the device can be saved. Event-loop thread, also while the VM is paused: the
    // answers go to guest memory and the interrupt, as a completion would anyway.
    Expected<void> complete_in_flight();
    // complete_in_flight(), then makes what the guest wrote durable (fdatasync of a writable
    // image), as a snapshot needs: the snapshot's disk state is the image as it is now.
    Expected<void> complete_and_flush();

    // Moves the drive to another image (PATCH /drives path_on_host), as Firecracker does:
    // requests in flight on the old image complete first (waiting at most
    // RESET_DRAIN_TIMEOUT), later ones go to the new image, the capacity in the configuration
    // space and config_generation change, and an active driver gets a configuration-change
    // interrupt so that it reads the new capacity (virtio 1.2 2.5.1, 4.2.2). The new image
    // must be read-only exactly when the old one is (the guest negotiated RO on it). On
    // failure the old image stays in use. Event-loop thread, while the VM runs (the caller
    // refuses while paused: completing requests and draining the queue is device work).
    Expected<void> replace_image(DiskImage image);
    // The image's file changed size on the host (PATCH /drives with the drive's own path, as
    // Firecracker uses it after a resize): the capacity is read again and, if it changed, the
    // driver is told as for replace_image. Event-loop thread.
    Expected<void> refresh_capacity();
    bool uses_image(std::string const& path) const { return m_image->is_same_file(path); }

    // Event-loop thread (and the creating thread before that).
    uint64_t capacity_sectors() const { return m_capacity_sectors; }
    std::string const& image_path() const { return m_image->path(); }
    // The configured format of the image (a replacement image is opened in the same one).
    DiskFormat image_format() const { return m_image->format(); }
    // The request limiter given in BlockOptions, if any; its update() changes the limits of a
    // running device (the limiter's timer resumes the queue). Event-loop thread only.
    RateLimiter* rate_limiter() { return m_options.rate_limiter ? &*m_options.rate_limiter : nullptr; }
    DiskEngineKind engine_kind() const { return m_engine->kind(); }
    // Whether completed requests are being recorded (record_path given and no append failed).
    bool recording() const { return m_recorder && !m_recorder->stopped(); }

    // Counters for the metrics layer (successful operations; errors counts every request
    // answered IOERR/UNSUPP or dropped as unanswerable).
    uint64_t read_operations() const { return m_read_operations.load(std::memory_order_relaxed); }
    uint64_t read_bytes() const { return m_read_bytes.load(std::memory_order_relaxed); }
    uint64_t write_operations() const { return m_write_operations.load(std::memory_order_relaxed); }
    uint64_t write_bytes() const { return m_write_bytes.load(std::memory_order_relaxed); }
    uint64_t flush_operations() const { return m_flush_operations.load(std::memory_order_relaxed); }
    uint64_t errors() const { return m_errors.load(std::memory_order_relaxed); }
    uint64_t rate_limited() const { return m_rate_limited.load(std::memory_order_relaxed); }
    // Counters by name for the metrics layer.
    std::vector<Counter> counters() const override {
        return { { "read_operations", read_operations() },   { "read_bytes", read_bytes() },
                 { "write_operations", write_operations() }, { "write_bytes", write_bytes() },
                 { "flush_operations", flush_operations() }, { "errors", errors() },
                 { "rate_limited", rate_limited() },         { "budget_yields", budget_yields() } };
    }

private:
    struct InFlight {
        bool active { false };
        uint32_t type { 0 };
        GuestAddress status { 0 };
        uint32_t data_length { 0 };
        uint64_t offset { 0 };       // recording: where the range starts
        uint64_t flush_covers { 0 }; // recording: records completed before a flush was submitted
    };
    enum class Started { Answered, Submitted, Deferred };

    BlockDevice(std::unique_ptr<DiskImage> image, std::unique_ptr<DiskEngine> engine, EventLoop& event_loop,
                BlockOptions options);

    // The limits this device offers in its configuration space and enforces on every request.
    static BlockRequestLimits request_limits();
    Expected<void> drain();
    Expected<Started> start_request(DescriptorChain const& chain);
    Expected<Started> submit(DescriptorChain const& chain, BlockRequest const& request);
    Expected<Started> reject(DescriptorChain const& chain, GuestAddress status, uint8_t value,
                             std::string const& message);
    Expected<void> answer(uint16_t head, GuestAddress status, uint8_t value, uint32_t written);
    Expected<void> on_completions();
    Expected<void> answer_completions();
    // Appends a successfully completed request to the recording (event-loop thread).
    void record_completion(uint16_t head, InFlight const& request);
    // Polls the engine's completion fd until nothing is in flight, handing completions to
    // `take_completions` (answer or drop them); fails after RESET_DRAIN_TIMEOUT or on poll errors.
    Expected<void> wait_until_engine_idle(Expected<void> (BlockDevice::*take_completions)());
    Expected<void> drop_completions();
    void set_capacity(uint64_t size_bytes);
    Expected<void> finish_signalling();
    void on_limiter_timer();
    void run(Expected<void> (BlockDevice::*step)());
    void wait_for_in_flight();
    std::string log_name() const override { return "virtio-blk " + m_image->path(); }

    std::unique_ptr<DiskImage> m_image;
    std::unique_ptr<DiskEngine> m_engine;
    EventLoop& m_event_loop;
    BlockOptions m_options;
    std::string m_id;
    uint64_t m_capacity_sectors { 0 };
    uint64_t m_features { 0 };
    // Read by vCPU threads (read_config), changed by replace_image on the event-loop thread.
    mutable Mutex m_config_lock;
    std::array<uint8_t, CONFIG_SIZE> m_config GUARDED_BY(m_config_lock) {};
    std::atomic<uint32_t> m_config_generation { 0 };
    uint16_t m_queue_sizes[1] { QUEUE_SIZE };
    bool m_completion_registered { false };
    bool m_timer_registered { false };

    DescriptorChain m_chain;
    std::vector<InFlight> m_in_flight; // indexed by chain head
    // Bytes of the discard or write-zeroes range started by the last start_request(), which
    // drain() charges against its slice (their chains are tiny, their ranges are not).
    uint64_t m_range_bytes_started { 0 };
    uint64_t m_in_flight_bytes { 0 }; // data (or range) bytes of the active entries
    uint64_t m_generation { 0 };      // engine tag = generation << 16 | head
    std::vector<iovec> m_iovecs;
    std::unique_ptr<WriteRecorder> m_recorder;
    // Recording only: each in-flight write's host ranges (indexed by chain head), which still
    // hold its data when it completes (the guest may not touch them before the answer).
    std::vector<std::vector<iovec>> m_write_ranges;
    bool m_engine_full { false };
    bool m_waiting_for_limiter { false };
    bool m_used_pending { false };
    bool m_submissions_pending { false };

    std::atomic<uint64_t> m_read_operations { 0 };
    std::atomic<uint64_t> m_read_bytes { 0 };
    std::atomic<uint64_t> m_write_operations { 0 };
    std::atomic<uint64_t> m_write_bytes { 0 };
    std::atomic<uint64_t> m_flush_operations { 0 };
    std::atomic<uint64_t> m_errors { 0 };
    std::atomic<uint64_t> m_rate_limited { 0 };
};

} // namespace kvmm::virtio

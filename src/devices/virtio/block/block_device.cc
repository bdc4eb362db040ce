#include "devices/virtio/block/block_device.h"

#include "devices/virtio/config_space.h"
#include "devices/virtio/work_budget.h"

#include "backends/disk/disk_io.h"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

// The device runs on little-endian x86-64 hosts only, so the specification's le16/le32/le64
// fields are read and written as native integers.
static_assert(std::endian::native == std::endian::little);

namespace kvmm::virtio {

namespace {

// Offsets in struct virtio_blk_config (5.2.4).
constexpr size_t CONFIG_CAPACITY = 0;
constexpr size_t CONFIG_SIZE_MAX = 8;
constexpr size_t CONFIG_SEG_MAX = 12;
constexpr size_t CONFIG_BLK_SIZE = 20;
constexpr size_t CONFIG_WRITEBACK = 32;
constexpr size_t CONFIG_NUM_QUEUES = 34;
constexpr size_t CONFIG_MAX_DISCARD_SECTORS = 36;
constexpr size_t CONFIG_MAX_DISCARD_SEG = 40;
constexpr size_t CONFIG_DISCARD_SECTOR_ALIGNMENT = 44;
constexpr size_t CONFIG_MAX_WRITE_ZEROES_SECTORS = 48;
constexpr size_t CONFIG_MAX_WRITE_ZEROES_SEG = 52;
constexpr size_t CONFIG_WRITE_ZEROES_MAY_UNMAP = 56;

constexpr size_t REAP_BATCH = 64;
constexpr unsigned HEAD_BITS = 16;

// Appends the host ranges behind bytes [offset, offset + length) of `segments`. Drivers may
// frame a request any way they like (2.6.4), so the data need not start at a descriptor.
Expected<void> collect_host_ranges(GuestMemory const& memory, std::span<ChainSegment const> segments, uint64_t offset,
                                   uint64_t length, std::vector<iovec>& out) {
    for (auto const& segment : segments) {
        if (length == 0)
            break;
        if (offset >= segment.length) {
            offset -= segment.length;
            continue;
        }
        uint64_t const piece = std::min<uint64_t>(segment.length - offset, length);
        TRY(memory.host_ranges(segment.address.offset(offset), piece, out));
        length -= piece;
        offset = 0;
    }
    if (length != 0)
        return Error::format("request data is {} bytes shorter than its chain claims", length);
    return {};
}

} // namespace

Expected<std::unique_ptr<BlockDevice>> BlockDevice::create(DiskImage image, EventLoop& event_loop,
                                                           BlockOptions options) {
    // The engine keeps a reference to the image, so the image lives on the heap and never moves.
    auto owned_image = std::make_unique<DiskImage>(std::move(image));
    auto engine = TRY(create_engine(options.engine, *owned_image, options.write_through, QUEUE_SIZE));
    auto device = std::unique_ptr<BlockDevice>(
        new BlockDevice(std::move(owned_image), std::move(engine), event_loop, std::move(options)));
    BlockDevice* const raw = device.get();
    if (raw->m_options.record_path)
        raw->m_recorder = TRY(WriteRecorder::create(*raw->m_options.record_path, raw->m_capacity_sectors)
                                  .with_context(fmt::format("virtio-blk {}", raw->m_image->path())));
    TRY(event_loop.add(raw->m_engine->completion_fd(), [raw] { raw->run(&BlockDevice::on_completions); }));
    raw->m_completion_registered = true;
    if (raw->m_options.rate_limiter) {
        TRY(event_loop.add(raw->m_options.rate_limiter->timer_fd(), [raw] { raw->on_limiter_timer(); }));
        raw->m_timer_registered = true;
    }
    return device;
}

BlockDevice::BlockDevice(std::unique_ptr<DiskImage> image, std::unique_ptr<DiskEngine> engine, EventLoop& event_loop,
                         BlockOptions options)
    : m_image(std::move(image)), m_engine(std::move(engine)), m_event_loop(event_loop), m_options(std::move(options)) {
    m_id = m_options.serial.value_or(m_image->device_id());
    if (m_id.size() > ID_BYTES)
        m_id.resize(ID_BYTES);
    // The image size need not be a multiple of a sector; the tail is not exposed.
    m_capacity_sectors = m_image->size_bytes() / SECTOR_SIZE;
    m_iovecs.reserve(disk_io::MAX_SEGMENTS);

    m_features = feature_bit(BLOCK_FEATURE_SIZE_MAX) | feature_bit(BLOCK_FEATURE_SEG_MAX) |
                 feature_bit(BLOCK_FEATURE_BLK_SIZE) | feature_bit(FEATURE_RING_INDIRECT_DESC) |
                 feature_bit(FEATURE_RING_EVENT_IDX);
    // 5.2.5: without FLUSH the driver assumes a write-through device; that is what the
    // write-through engine is, so it needs no flushes.
    if (!m_options.write_through)
        m_features |= feature_bit(BLOCK_FEATURE_FLUSH);
    if (m_image->read_only())
        m_features |= feature_bit(BLOCK_FEATURE_RO);
    else
        m_features |= feature_bit(BLOCK_FEATURE_DISCARD) | feature_bit(BLOCK_FEATURE_WRITE_ZEROES);

    put_config<CONFIG_CAPACITY>(m_config, m_capacity_sectors);
    put_config<CONFIG_SIZE_MAX>(m_config, SIZE_MAX_BYTES);
    put_config<CONFIG_SEG_MAX>(m_config, SEG_MAX);
    put_config<CONFIG_BLK_SIZE>(m_config, static_cast<uint32_t>(SECTOR_SIZE));
    put_config<CONFIG_WRITEBACK>(m_config, static_cast<uint8_t>(m_options.write_through ? 0 : 1));
    put_config<CONFIG_NUM_QUEUES>(m_config, uint16_t { 1 });
    if (!m_image->read_only()) {
        put_config<CONFIG_MAX_DISCARD_SECTORS>(m_config, MAX_DISCARD_SECTORS);
        put_config<CONFIG_MAX_DISCARD_SEG>(m_config, uint32_t { 1 });
        put_config<CONFIG_DISCARD_SECTOR_ALIGNMENT>(m_config, DISCARD_SECTOR_ALIGNMENT);
        put_config<CONFIG_MAX_WRITE_ZEROES_SECTORS>(m_config, MAX_WRITE_ZEROES_SECTORS);
        put_config<CONFIG_MAX_WRITE_ZEROES_SEG>(m_config, uint32_t { 1 });
        put_config<CONFIG_WRITE_ZEROES_MAY_UNMAP>(m_config, uint8_t { 1 });
    }
}

BlockDevice::~BlockDevice() {
    wait_for_in_flight();
    if (m_completion_registered)
        m_event_loop.remove(m_engine->completion_fd());
    if (m_timer_registered)
        m_event_loop.remove(m_options.rate_limiter->timer_fd());
}

void BlockDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    MutexLock guard(m_config_lock);
    read_config_window(m_config, offset, data);
}

Expected<void> BlockDevice::activate(ActivationContext context) {
    if (context.queues.empty() || !context.queues[0])
        return Error("the block device's request queue was not set up");
    m_in_flight.assign(context.queues[0]->size(), InFlight {});
    if (m_recorder)
        m_write_ranges.resize(m_in_flight.size());
    m_in_flight_bytes = 0;
    ++m_generation;
    m_engine_full = false;
    m_waiting_for_limiter = false;
    m_used_pending = false;
    take_context(std::move(context));
    return {};
}

void BlockDevice::reset() {
    wait_for_in_flight();
    drop_context();
    m_in_flight.clear();
    m_in_flight_bytes = 0;
    m_engine_full = false;
    m_waiting_for_limiter = false;
    m_used_pending = false;
}

void BlockDevice::process_queue(size_t index) {
    if (index != 0)
        return;
    run(&BlockDevice::drain);
}

void BlockDevice::on_limiter_timer() {
    m_options.rate_limiter->on_timer();
    m_waiting_for_limiter = false;
    run(&BlockDevice::drain);
}

void BlockDevice::run(Expected<void> (BlockDevice::*step)()) {
    auto result = (this->*step)();
    if (result)
        result = finish_signalling();
    fail_on_error(result);
}

Expected<void> BlockDevice::finish_signalling() {
    // One submission system call and at most one interrupt per batch.
    if (m_submissions_pending) {
        m_submissions_pending = false;
        TRY(m_engine->flush_submissions());
    }
    if (m_used_pending && active()) {
        m_used_pending = false;
        TRY(interrupt_if_wanted(*context().queues[0]));
    }
    return {};
}

Expected<void> BlockDevice::drain() {
    if (!active())
        return {};
    auto& queue = *context().queues[0];
    // The sync engine does its I/O right here, on the event-loop thread: bound what one turn
    // may start, so a full queue of large requests cannot hold the loop (work_budget.h).
    WorkBudget slice(QUEUE_SIZE, MAX_BYTES_PER_WAKEUP);
    while (true) {
        if (m_waiting_for_limiter)
            return {};
        // In-flight bytes are bounded too, so stopping the VM (which waits for in-flight
        // requests, see reset()) takes what the disk needs for MAX_IN_FLIGHT_BYTES at most.
        if (m_engine->in_flight() >= m_engine->capacity() || m_in_flight_bytes >= MAX_IN_FLIGHT_BYTES) {
            m_engine_full = true;
            return {};
        }
        if (slice.exhausted()) {
            yield_turn(0);
            return {};
        }
        if (!TRY(queue.pop_or_enable_notifications(m_chain)))
            return {};
        slice.charge_chain();
        slice.charge_bytes(m_chain.readable_length() + m_chain.writable_length());
        m_range_bytes_started = 0;
        if (TRY(start_request(m_chain)) == Started::Deferred)
            return {};
        slice.charge_bytes(m_range_bytes_started);
    }
}

BlockRequestLimits BlockDevice::request_limits() {
    return { MAX_REQUEST_BYTES, MAX_DISCARD_SECTORS, MAX_WRITE_ZEROES_SECTORS };
}

Expected<BlockDevice::Started> BlockDevice::start_request(DescriptorChain const& chain) {
    auto const& memory = *context().memory;
    auto const parsed =
        TRY(parse_block_request(memory, chain, m_capacity_sectors, m_image->read_only(), request_limits()));
    if (auto const* rejected = std::get_if<BlockRequestRejection>(&parsed)) {
        if (rejected->status)
            return reject(chain, *rejected->status, rejected->status_value, rejected->reason);
        // Nowhere to put a status: the request cannot be answered, only given back.
        m_errors.fetch_add(1, std::memory_order_relaxed);
        guest_error(fmt::format("request at head {}: {}; returned unanswered", chain.head(), rejected->reason));
        TRY(context().queues[0]->add_used(chain.head(), 0));
        m_used_pending = true;
        return Started::Answered;
    }
    auto const& request = std::get<BlockRequest>(parsed);
    switch (request.type) {
    case BLOCK_REQUEST_IN:
    case BLOCK_REQUEST_OUT:
        m_iovecs.clear();
        TRY(collect_host_ranges(memory, request.data_segments, request.data_offset, request.length, m_iovecs));
        if (m_iovecs.size() > disk_io::MAX_SEGMENTS)
            return reject(chain, request.status, BLOCK_STATUS_IOERR,
                          fmt::format("request data spans {} host ranges, more than {}", m_iovecs.size(),
                                      disk_io::MAX_SEGMENTS));
        break;
    case BLOCK_REQUEST_FLUSH:
        if (m_options.write_through) {
            // FLUSH is not offered in write-through mode; every completed write is durable already.
            m_flush_operations.fetch_add(1, std::memory_order_relaxed);
            TRY(answer(chain.head(), request.status, BLOCK_STATUS_OK, 1));
            return Started::Answered;
        }
        return submit(chain, request);
    case BLOCK_REQUEST_GET_ID: {
        // 5.2.6: 20 bytes, zero-padded (NUL-terminated when shorter than 20).
        std::array<std::byte, ID_BYTES> id {};
        std::memcpy(id.data(), m_id.data(), m_id.size());
        auto const written = TRY(chain.write(memory, 0, std::span(id).first(static_cast<size_t>(request.length))));
        TRY(answer(chain.head(), request.status, BLOCK_STATUS_OK, static_cast<uint32_t>(written + 1)));
        return Started::Answered;
    }
    default: // DISCARD, WRITE_ZEROES
        break;
    }
    if (request.length == 0) {
        TRY(answer(chain.head(), request.status, BLOCK_STATUS_OK, 1));
        return Started::Answered;
    }
    return submit(chain, request);
}

Expected<BlockDevice::Started> BlockDevice::submit(DescriptorChain const& chain, BlockRequest const& request) {
    uint64_t const length = request.length;
    auto& queue = *context().queues[0];
    // Only data moves count against the bandwidth bucket; every request takes an op token.
    bool const moves_data = request.type == BLOCK_REQUEST_IN || request.type == BLOCK_REQUEST_OUT;
    if (m_options.rate_limiter && !m_options.rate_limiter->consume(moves_data ? length : 0)) {
        queue.undo_pop(chain);
        m_waiting_for_limiter = true;
        m_rate_limited.fetch_add(1, std::memory_order_relaxed);
        return Started::Deferred;
    }
    uint64_t const tag = (m_generation << HEAD_BITS) | chain.head();
    uint64_t const offset = request.sector * SECTOR_SIZE; // no overflow: checked against the capacity
    Expected<void> submitted {};
    switch (request.type) {
    case BLOCK_REQUEST_IN:
        submitted = m_engine->read(tag, offset, m_iovecs);
        break;
    case BLOCK_REQUEST_OUT:
        submitted = m_engine->write(tag, offset, m_iovecs);
        break;
    case BLOCK_REQUEST_FLUSH:
        submitted = m_engine->flush(tag);
        break;
    case BLOCK_REQUEST_DISCARD:
        submitted = m_engine->discard(tag, offset, length);
        break;
    default:
        submitted = m_engine->write_zeroes(tag, offset, length, request.may_unmap);
        break;
    }
    if (!submitted) {
        if (submitted.error().error_number() == EAGAIN) {
            queue.undo_pop(chain);
            m_engine_full = true;
            return Started::Deferred;
        }
        return reject(chain, request.status, BLOCK_STATUS_IOERR,
                      fmt::format("submitting {} failed: {}", block_request_type_name(request.type),
                                  submitted.error().message()));
    }
    m_in_flight[chain.head()] = InFlight { true,           request.type,
                                           request.status, static_cast<uint32_t>(length),
                                           offset,         m_recorder ? m_recorder->next_sequence() : 0 };
    if (m_recorder && request.type == BLOCK_REQUEST_OUT)
        m_write_ranges[chain.head()].assign(m_iovecs.begin(), m_iovecs.end());
    m_in_flight_bytes += length;
    if (!moves_data)
        m_range_bytes_started = length;
    m_submissions_pending = true;
    return Started::Submitted;
}

Expected<BlockDevice::Started> BlockDevice::reject(DescriptorChain const& chain, GuestAddress status, uint8_t value,
                                                   std::string const& message) {
    m_errors.fetch_add(1, std::memory_order_relaxed);
    guest_error(fmt::format("request at head {}: {}", chain.head(), message));
    TRY(answer(chain.head(), status, value, 1));
    return Started::Answered;
}

Expected<void> BlockDevice::answer(uint16_t head, GuestAddress status, uint8_t value, uint32_t written) {
    TRY(context().memory->write_obj(status, value));
    TRY(context().queues[0]->add_used(head, written));
    m_used_pending = true;
    return {};
}

Expected<void> BlockDevice::replace_image(DiskImage image) {
    auto const mode = [](bool read_only) { return read_only ? "read-only" : "read-write"; };
    if (image.read_only() != m_image->read_only())
        return Error::format("{} is opened {} but the drive is {}", image.path(), mode(image.read_only()),
                             mode(m_image->read_only()));
    auto new_image = std::make_unique<DiskImage>(std::move(image));
    auto new_engine = TRY(create_engine(m_options.engine, *new_image, m_options.write_through, QUEUE_SIZE));
    TRY(complete_in_flight().with_context(fmt::format("virtio-blk {}", m_image->path())));
    BlockDevice* const self = this;
    TRY(m_event_loop.add(new_engine->completion_fd(), [self] { self->run(&BlockDevice::on_completions); }));
    m_event_loop.remove(m_engine->completion_fd());
    // The recording describes one image from its start; a drive moved to another one ends it.
    if (m_recorder)
        m_recorder->stop(fmt::format("the drive moved to {}", new_image->path()));
    auto old_engine = std::exchange(m_engine, std::move(new_engine));
    auto old_image = std::exchange(m_image, std::move(new_image));
    old_engine.reset(); // it refers to its image
    spdlog::info("virtio-blk: drive moved from {} to {} ({} sectors)", old_image->path(), m_image->path(),
                 m_image->size_bytes() / SECTOR_SIZE);
    old_image.reset(); // closes the old file and releases its lock
    set_capacity(m_image->size_bytes());
    if (active()) {
        m_engine_full = false;
        run(&BlockDevice::drain); // requests deferred while the old engine was full
    }
    return {};
}

Expected<void> BlockDevice::refresh_capacity() {
    uint64_t const size_bytes = TRY(m_image->current_size());
    if (size_bytes / SECTOR_SIZE == m_capacity_sectors)
        return {};
    spdlog::info("virtio-blk {}: size now {} sectors (was {})", m_image->path(), size_bytes / SECTOR_SIZE,
                 m_capacity_sectors);
    set_capacity(size_bytes);
    return {};
}

void BlockDevice::set_capacity(uint64_t size_bytes) {
    // Requests check against the new capacity from now on; one already in flight beyond a
    // shrunken end fails in the engine and is answered IOERR.
    m_capacity_sectors = size_bytes / SECTOR_SIZE;
    {
        MutexLock guard(m_config_lock);
        put_config<CONFIG_CAPACITY>(m_config, m_capacity_sectors);
        m_config_generation.fetch_add(1, std::memory_order_acq_rel);
    }
    if (active())
        context().interrupt->signal_config_change();
}

Expected<void> BlockDevice::complete_in_flight() {
    if (m_submissions_pending) {
        m_submissions_pending = false;
        TRY(m_engine->flush_submissions());
    }
    TRY(wait_until_engine_idle(&BlockDevice::answer_completions));
    return finish_signalling();
}

Expected<void> BlockDevice::complete_and_flush() {
    TRY(complete_in_flight());
    if (!m_image->read_only() && disk_io::flush(m_image->fd()) < 0)
        return Error::format("virtio-blk {}: flushing the image failed", m_image->path());
    return {};
}

Expected<void> BlockDevice::wait_until_engine_idle(Expected<void> (BlockDevice::*take_completions)()) {
    auto const deadline = std::chrono::steady_clock::now() + RESET_DRAIN_TIMEOUT;
    while (m_engine->in_flight() > 0) {
        auto const now = std::chrono::steady_clock::now();
        if (now >= deadline)
            return Error::format("{} requests still in flight after {} s", m_engine->in_flight(),
                                 RESET_DRAIN_TIMEOUT.count());
        auto const remaining = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
        pollfd ready { m_engine->completion_fd(), POLLIN, 0 };
        if (::poll(&ready, 1, static_cast<int>(remaining.count())) < 0 && errno != EINTR)
            return Error::from_errno("poll on the completion fd");
        TRY((this->*take_completions)());
    }
    return {};
}

Expected<void> BlockDevice::drop_completions() {
    std::array<DiskCompletion, REAP_BATCH> batch;
    while (m_engine->reap(batch) > 0) {
    }
    return {};
}

Expected<void> BlockDevice::on_completions() {
    TRY(answer_completions());
    if (m_engine_full && active()) {
        m_engine_full = false;
        TRY(drain());
    }
    return {};
}

Expected<void> BlockDevice::answer_completions() {
    std::array<DiskCompletion, REAP_BATCH> batch;
    while (true) {
        size_t const count = m_engine->reap(batch);
        if (count == 0)
            break;
        for (auto const& completion : std::span(batch).first(count)) {
            uint64_t const head = completion.tag & ((uint64_t { 1 } << HEAD_BITS) - 1);
            if ((completion.tag >> HEAD_BITS) != m_generation || head >= m_in_flight.size() ||
                !m_in_flight[head].active || !active())
                continue; // a request from before the last reset or failure: its result is dropped
            InFlight const request = m_in_flight[head];
            m_in_flight[head].active = false;
            m_in_flight_bytes -= std::min<uint64_t>(request.data_length, m_in_flight_bytes);
            uint8_t status = BLOCK_STATUS_OK;
            uint32_t written = 1;
            if (completion.result < 0 || (request.type <= BLOCK_REQUEST_OUT &&
                                          static_cast<uint32_t>(completion.result) != request.data_length)) {
                status = BLOCK_STATUS_IOERR;
                m_errors.fetch_add(1, std::memory_order_relaxed);
                spdlog::warn("virtio-blk {}: {} request failed: {}", m_image->path(),
                             block_request_type_name(request.type),
                             completion.result < 0 ? std::strerror(-completion.result) : "short transfer");
            } else if (request.type == BLOCK_REQUEST_IN) {
                written += request.data_length;
                m_read_operations.fetch_add(1, std::memory_order_relaxed);
                m_read_bytes.fetch_add(request.data_length, std::memory_order_relaxed);
            } else if (request.type == BLOCK_REQUEST_OUT) {
                m_write_operations.fetch_add(1, std::memory_order_relaxed);
                m_write_bytes.fetch_add(request.data_length, std::memory_order_relaxed);
            } else if (request.type == BLOCK_REQUEST_FLUSH) {
                m_flush_operations.fetch_add(1, std::memory_order_relaxed);
            }
            if (status == BLOCK_STATUS_OK && m_recorder)
                record_completion(static_cast<uint16_t>(head), request);
            TRY(answer(static_cast<uint16_t>(head), request.status, status, written));
        }
    }
    return {};
}

void BlockDevice::record_completion(uint16_t head, InFlight const& request) {
    // Recorded before the guest sees the answer, so the recording's order is an order the
    // guest could have observed. A failed request is not recorded: it may have changed some of
    // its sectors, which the crash model does not cover (docs/api.md "Write recording").
    switch (request.type) {
    case BLOCK_REQUEST_OUT:
        m_recorder->record_write(request.offset, m_write_ranges[head]);
        break;
    case BLOCK_REQUEST_DISCARD:
        m_recorder->record_range(WriteLogRecordType::Discard, request.offset, request.data_length);
        break;
    case BLOCK_REQUEST_WRITE_ZEROES:
        m_recorder->record_range(WriteLogRecordType::WriteZeroes, request.offset, request.data_length);
        break;
    case BLOCK_REQUEST_FLUSH:
        m_recorder->record_flush(request.flush_covers);
        return;
    default:
        return;
    }
    // Write-through (DiskEngine): a write or write-zeroes is on stable storage when it
    // completes, as if a flush covering it had completed right after it. A discard is not
    // synced by the engine, so it waits for a later one.
    if (m_options.write_through && request.type != BLOCK_REQUEST_DISCARD)
        m_recorder->record_flush(m_recorder->next_sequence());
}

void BlockDevice::wait_for_in_flight() {
    if (m_submissions_pending) {
        m_submissions_pending = false;
        if (auto flushed = m_engine->flush_submissions(); !flushed)
            spdlog::error("virtio-blk {}: {}", m_image->path(), flushed.error().message());
    }
    if (auto idle = wait_until_engine_idle(&BlockDevice::drop_completions); !idle) {
        // Their completions carry an old generation and are dropped when they arrive.
        spdlog::error("virtio-blk {}: {}; giving up waiting", m_image->path(), idle.error().message());
    }
    ++m_generation;
    for (auto& request : m_in_flight)
        request.active = false;
}

} // namespace kvmm::virtio

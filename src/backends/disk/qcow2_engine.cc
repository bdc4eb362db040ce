#include "backends/disk/qcow2_engine.h"

#include "backends/disk/disk_io.h"
#include "backends/disk/qcow2_image.h"

#include <poll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>

namespace kvmm {

namespace {

// How long discard and write-zeroes wait for in-place writes in flight (as a reset would).
constexpr auto INNER_DRAIN_TIMEOUT = std::chrono::seconds(30);

} // namespace

Expected<std::unique_ptr<Qcow2Engine>> Qcow2Engine::create(std::unique_ptr<DiskEngine> inner, DiskImage& image,
                                                           bool write_through, unsigned queue_depth) {
    if (image.qcow2() == nullptr)
        return Error::format("disk '{}' is not a qcow2 image", image.path());
    return std::unique_ptr<Qcow2Engine>(new Qcow2Engine(std::move(inner), image, write_through, queue_depth));
}

Qcow2Engine::Qcow2Engine(std::unique_ptr<DiskEngine> inner, DiskImage& image, bool write_through, unsigned queue_depth)
    : m_inner(std::move(inner)), m_image(image), m_layer(*image.qcow2()), m_write_through(write_through),
      m_capacity(queue_depth), m_parents(queue_depth), m_local_completions(queue_depth) {
    m_free_parents.reserve(queue_depth);
    for (uint32_t slot = queue_depth; slot > 0; --slot)
        m_free_parents.push_back(slot - 1);
}

Expected<void> Qcow2Engine::reserve() {
    if (m_in_flight >= m_capacity)
        return Error(fmt::format("disk '{}': {} requests in flight, the qcow2 engine is full", m_image.path(),
                                 m_in_flight),
                     EAGAIN);
    ++m_in_flight;
    return {};
}

void Qcow2Engine::complete_locally(uint64_t tag, int32_t result) {
    m_local_completions.push({ tag, result }); // reserve() made room
    signal_local();
}

void Qcow2Engine::signal_local() {
    uint64_t const one = 1;
    // Fails only when the counter would overflow, i.e. when the fd is readable anyway.
    (void)!::write(m_inner->completion_fd(), &one, sizeof(one));
}

Expected<void> Qcow2Engine::transfer(bool is_write, uint64_t tag, uint64_t offset, std::span<iovec const> buffers) {
    TRY(reserve());
    if (is_write && m_image.read_only()) {
        complete_locally(tag, -EROFS);
        return {};
    }
    int64_t const requested = disk_io::checked_transfer_length(buffers);
    if (requested <= 0) {
        complete_locally(tag, static_cast<int32_t>(requested));
        return {};
    }
    uint64_t const size = m_layer.virtual_size();
    auto length = static_cast<uint64_t>(requested);
    if (offset >= size || length > size - offset) {
        if (is_write) {
            complete_locally(tag, -EIO); // a qcow2 image does not grow
            return {};
        }
        length = offset >= size ? 0 : size - offset; // reads stop at the end, as for raw
    }

    m_pieces.clear();
    bool wrote_synchronously = false;
    int32_t failure = 0;
    for (uint64_t position = 0; position < length && failure == 0;) {
        auto extent = m_layer.map(offset + position, length - position);
        if (!extent) {
            failure = extent.error().error_number() != 0 ? -extent.error().error_number() : -EIO;
            break;
        }
        if (extent->kind == qcow2::ExtentKind::Data && (!is_write || extent->writable_in_place)) {
            m_pieces.push_back({ extent->host_offset, position, extent->length });
        } else {
            m_slice.clear();
            qcow2::slice_buffers(buffers, position, extent->length, m_slice);
            int32_t const result = is_write ? m_layer.write_allocating(offset + position, m_slice)
                                            : m_layer.read_extent(*extent, offset + position, m_slice);
            wrote_synchronously |= is_write;
            if (result < 0)
                failure = result;
        }
        position += extent->length;
    }
    if (failure == 0 && wrote_synchronously && m_write_through)
        failure = m_layer.flush();
    if (failure != 0) {
        complete_locally(tag, failure);
        return {};
    }
    if (m_pieces.empty()) {
        complete_locally(tag, static_cast<int32_t>(length));
        return {};
    }
    if (m_pieces.size() > m_inner->capacity() - m_inner->in_flight()) {
        // A fragmented request that does not fit the inner engine now: do it here.
        for (auto const& piece : m_pieces) {
            m_slice.clear();
            qcow2::slice_buffers(buffers, piece.position, piece.length, m_slice);
            int32_t const result = is_write ? disk_io::write(m_image.fd(), piece.host_offset, m_slice, m_write_through)
                                            : disk_io::read(m_image.fd(), piece.host_offset, m_slice);
            if (result < 0 || static_cast<uint64_t>(result) != piece.length) {
                complete_locally(tag, result < 0 ? result : -EIO);
                return {};
            }
        }
        complete_locally(tag, static_cast<int32_t>(length));
        return {};
    }
    uint32_t const slot = m_free_parents.back();
    m_free_parents.pop_back();
    Parent& parent = m_parents[slot];
    parent = Parent { tag, 0, static_cast<int32_t>(length), 0, 0 };
    for (auto const& piece : m_pieces) {
        m_slice.clear();
        qcow2::slice_buffers(buffers, piece.position, piece.length, m_slice);
        auto submitted = is_write ? m_inner->write(slot, piece.host_offset, m_slice)
                                  : m_inner->read(slot, piece.host_offset, m_slice);
        if (!submitted) {
            // Cannot happen (room was checked); fail the request once its submitted pieces are back.
            parent.result = -EIO;
            break;
        }
        ++parent.pending;
        parent.expected += piece.length;
    }
    if (parent.pending == 0) {
        m_free_parents.push_back(slot);
        complete_locally(tag, -EIO);
    }
    return {};
}

Expected<void> Qcow2Engine::read(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) {
    return transfer(false, tag, offset, buffers);
}

Expected<void> Qcow2Engine::write(uint64_t tag, uint64_t offset, std::span<iovec const> buffers) {
    return transfer(true, tag, offset, buffers);
}

Expected<void> Qcow2Engine::flush(uint64_t tag) {
    TRY(reserve());
    // Completed in-place writes are in the page cache: the fdatasync that ends the metadata
    // write-back covers them as well.
    complete_locally(tag, m_layer.flush());
    return {};
}

template <typename Change>
Expected<void> Qcow2Engine::change_clusters(uint64_t tag, Change change) {
    TRY(reserve());
    if (m_image.read_only()) {
        complete_locally(tag, -EROFS);
        return {};
    }
    if (auto idle = wait_for_inner(); !idle) {
        complete_locally(tag, -EIO);
        return {};
    }
    int32_t result = change();
    if (result == 0 && m_write_through)
        result = m_layer.flush();
    complete_locally(tag, result);
    return {};
}

Expected<void> Qcow2Engine::discard(uint64_t tag, uint64_t offset, uint64_t length) {
    return change_clusters(tag, [&] { return m_layer.discard(offset, length); });
}

Expected<void> Qcow2Engine::write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool) {
    // Whole clusters become zero clusters whether or not the driver allows unmapping: that is
    // both the cheapest and the smallest image.
    return change_clusters(tag, [&] { return m_layer.write_zeroes(offset, length); });
}

Expected<void> Qcow2Engine::wait_for_inner() {
    TRY(m_inner->flush_submissions());
    auto const deadline = std::chrono::steady_clock::now() + INNER_DRAIN_TIMEOUT;
    while (m_inner->in_flight() > 0) {
        if (std::chrono::steady_clock::now() >= deadline)
            return Error::format("disk '{}': {} requests still in flight", m_image.path(), m_inner->in_flight());
        pollfd ready { m_inner->completion_fd(), POLLIN, 0 };
        if (::poll(&ready, 1, 100) < 0 && errno != EINTR)
            return Error::from_errno("poll on the inner completion fd");
        take_inner({}, SIZE_MAX);
    }
    if (!m_local_completions.empty())
        signal_local();
    return {};
}

size_t Qcow2Engine::take_inner(std::span<DiskCompletion> out, size_t limit) {
    std::array<DiskCompletion, 64> batch {};
    size_t produced = 0;
    size_t taken = 0;
    while (taken < limit) {
        size_t const wanted = std::min<size_t>(batch.size(), limit - taken);
        size_t const count = m_inner->reap(std::span(batch).first(wanted));
        taken += count;
        for (auto const& completion : std::span(batch).first(count)) {
            auto const slot = static_cast<uint32_t>(completion.tag);
            Parent& parent = m_parents[slot];
            if (completion.result < 0) {
                if (parent.result >= 0)
                    parent.result = completion.result;
            } else {
                parent.done += static_cast<uint64_t>(completion.result);
            }
            if (--parent.pending > 0)
                continue;
            int32_t result = parent.result;
            if (result >= 0 && parent.done != parent.expected)
                result = -EIO; // a data cluster past the end of the file
            m_free_parents.push_back(slot);
            if (produced < out.size()) {
                out[produced++] = { parent.tag, result };
                --m_in_flight;
            } else {
                m_local_completions.push({ parent.tag, result });
            }
        }
        // Fewer than asked for: nothing else is ready (each reap of the inner engine costs a
        // system call, so do not ask again just to hear that).
        if (count < wanted)
            break;
    }
    return produced;
}

size_t Qcow2Engine::reap(std::span<DiskCompletion> out) {
    size_t count = 0;
    while (count < out.size() && m_local_completions.pop(out[count])) {
        ++count;
        --m_in_flight;
    }
    if (count < out.size())
        count += take_inner(out.subspan(count), out.size() - count);
    if (!m_local_completions.empty())
        signal_local();
    return count;
}

} // namespace kvmm

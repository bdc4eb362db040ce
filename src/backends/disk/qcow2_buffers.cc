// The iovec helpers of the qcow2 layer (qcow2_image.h).
#include "backends/disk/qcow2_image.h"

#include <algorithm>
#include <cstring>

namespace kvmm::qcow2 {

namespace {

// Walks `buffers` from byte `position`, calling visit(segment_pointer, bytes) for `length` bytes.
template <typename Visit>
void walk_buffers(std::span<iovec const> buffers, uint64_t position, uint64_t length, Visit visit) {
    for (auto const& buffer : buffers) {
        if (length == 0)
            return;
        if (position >= buffer.iov_len) {
            position -= buffer.iov_len;
            continue;
        }
        uint64_t const take = std::min<uint64_t>(buffer.iov_len - position, length);
        visit(static_cast<std::byte*>(buffer.iov_base) + position, take);
        position = 0;
        length -= take;
    }
}

} // namespace

void copy_to_buffers(std::span<iovec const> buffers, uint64_t position, std::byte const* data, uint64_t length) {
    walk_buffers(buffers, position, length, [&](std::byte* segment, uint64_t bytes) {
        std::memcpy(segment, data, bytes);
        data += bytes;
    });
}

void copy_from_buffers(std::span<iovec const> buffers, uint64_t position, std::byte* data, uint64_t length) {
    walk_buffers(buffers, position, length, [&](std::byte* segment, uint64_t bytes) {
        std::memcpy(data, segment, bytes);
        data += bytes;
    });
}

void zero_buffers(std::span<iovec const> buffers, uint64_t position, uint64_t length) {
    walk_buffers(buffers, position, length, [](std::byte* segment, uint64_t bytes) { std::memset(segment, 0, bytes); });
}

void slice_buffers(std::span<iovec const> buffers, uint64_t position, uint64_t length, std::vector<iovec>& out) {
    walk_buffers(buffers, position, length, [&](std::byte* segment, uint64_t bytes) {
        out.push_back({ segment, bytes });
    });
}

} // namespace kvmm::qcow2

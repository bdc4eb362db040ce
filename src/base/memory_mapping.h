// MemoryMapping: RAII owner of an mmap()ed range. Movable, not copyable.
// The only place in kvmm that calls mmap/munmap for anonymous memory.
#pragma once

#include "base/expected.h"

#include <cstddef>
#include <cstdint>
#include <utility>

namespace kvmm {

class MemoryMapping {
public:
    enum class HugePages { No, Transparent };

    // Anonymous, private, read-write memory of `size` bytes (a multiple of the page size),
    // reserved without swap accounting so that a large guest costs only what it touches.
    static Expected<MemoryMapping> create_anonymous(uint64_t size, HugePages huge_pages);
    // A private, read-write mapping of `size` bytes of the file `fd` from `offset` (both
    // page-aligned): pages are read from the file on first touch and a write copies the page,
    // so the file never changes. The caller checks that the file is long enough (an access
    // past its end would raise SIGBUS). The mapping keeps the file alive; `fd` may be closed.
    static Expected<MemoryMapping> create_file_private(int fd, uint64_t offset, uint64_t size);

    MemoryMapping() = default;
    ~MemoryMapping();
    MemoryMapping(MemoryMapping const&) = delete;
    MemoryMapping& operator=(MemoryMapping const&) = delete;
    MemoryMapping(MemoryMapping&& other) noexcept
        : m_address(std::exchange(other.m_address, nullptr)), m_size(std::exchange(other.m_size, 0)) {}
    MemoryMapping& operator=(MemoryMapping&& other) noexcept;

    std::byte* data() const { return m_address; }
    uint64_t size() const { return m_size; }

private:
    MemoryMapping(std::byte* address, uint64_t size) : m_address(address), m_size(size) {}

    std::byte* m_address { nullptr };
    uint64_t m_size { 0 };
};

} // namespace kvmm

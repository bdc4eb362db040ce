#include "base/memory_mapping.h"

#include <sys/mman.h>
#include <unistd.h>

namespace kvmm {

Expected<MemoryMapping> MemoryMapping::create_anonymous(uint64_t size, HugePages huge_pages) {
    auto const page_size = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    if (size == 0 || size % page_size != 0)
        return Error::format("anonymous mapping size {:#x} is not a non-zero multiple of the page size {:#x}", size,
                             page_size);
    void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (address == MAP_FAILED)
        return Error::from_errno(fmt::format("mmap of {} bytes of anonymous memory", size));
    // Transparent huge pages are advisory: a kernel without THP still gives working memory.
    if (huge_pages == HugePages::Transparent)
        (void)::madvise(address, size, MADV_HUGEPAGE);
    return MemoryMapping(static_cast<std::byte*>(address), size);
}

Expected<MemoryMapping> MemoryMapping::create_file_private(int fd, uint64_t offset, uint64_t size) {
    auto const page_size = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    if (size == 0 || size % page_size != 0 || offset % page_size != 0)
        return Error::format("file mapping of {:#x} bytes at offset {:#x} is not page-aligned", size, offset);
    // MAP_NORESERVE: a page costs memory only once the guest writes it.
    void* address =
        ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, static_cast<off_t>(offset));
    if (address == MAP_FAILED)
        return Error::from_errno(fmt::format("mmap of {} bytes of a file at offset {}", size, offset));
    return MemoryMapping(static_cast<std::byte*>(address), size);
}

MemoryMapping::~MemoryMapping() {
    if (m_address)
        ::munmap(m_address, m_size);
}

MemoryMapping& MemoryMapping::operator=(MemoryMapping&& other) noexcept {
    if (this != &other) {
        if (m_address)
            ::munmap(m_address, m_size);
        m_address = std::exchange(other.m_address, nullptr);
        m_size = std::exchange(other.m_size, 0);
    }
    return *this;
}

} // namespace kvmm

// Helpers shared by the PVH and Linux boot-protocol loaders (internal to arch/x86_64).
#pragma once

#include "arch/x86_64/kernel_loader.h"
#include "arch/x86_64/layout.h"

#include <cstring>
#include <optional>

namespace kvmm::x86_64 {

// Little-endian integer at `offset` of `bytes`, or nullopt when it does not fit.
template <typename T>
std::optional<T> read_le(std::span<std::byte const> bytes, uint64_t offset) {
    if (offset > bytes.size() || bytes.size() - offset < sizeof(T))
        return std::nullopt;
    T value {};
    std::memcpy(&value, bytes.data() + offset, sizeof(T));
    return value;
}

inline uint64_t align_up_page(uint64_t value) { return (value + 4095) & ~4095ull; }

// Copies the command line and its NUL to CMDLINE_ADDRESS; `limit` counts the NUL.
Expected<GuestAddress> write_cmdline(GuestMemory const& memory, std::string const& cmdline, uint64_t limit);

// Places the initrd page-aligned as high as possible with its last byte at or below
// `highest_address` and its start at or above `lowest_address`. Returns its address.
Expected<GuestAddress> place_initrd(GuestMemory const& memory, std::span<std::byte const> initrd,
                                    uint64_t lowest_address, uint64_t highest_address);

Expected<BootInfo> load_pvh_elf(GuestMemory const& memory, BootConfig const& config);
Expected<BootInfo> load_bzimage(GuestMemory const& memory, BootConfig const& config);

} // namespace kvmm::x86_64

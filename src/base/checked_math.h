// Overflow-checked arithmetic for sizes and addresses that come from a guest
// or a file. Each returns std::nullopt instead of wrapping.
#pragma once

#include <cstdint>
#include <optional>

namespace kvmm {

inline std::optional<uint64_t> checked_add(uint64_t a, uint64_t b) {
    uint64_t result = 0;
    if (__builtin_add_overflow(a, b, &result))
        return std::nullopt;
    return result;
}

inline std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
    uint64_t result = 0;
    if (__builtin_mul_overflow(a, b, &result))
        return std::nullopt;
    return result;
}

// Rounds value up to a multiple of alignment (a power of two); nullopt on overflow.
inline std::optional<uint64_t> checked_align_up(uint64_t value, uint64_t alignment) {
    auto sum = checked_add(value, alignment - 1);
    if (!sum)
        return std::nullopt;
    return *sum & ~(alignment - 1);
}

constexpr uint64_t align_down(uint64_t value, uint64_t alignment) { return value & ~(alignment - 1); }

constexpr bool is_power_of_two(uint64_t value) { return value != 0 && (value & (value - 1)) == 0; }

} // namespace kvmm

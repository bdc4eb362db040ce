// GuestAddress: a guest-physical address (gpa) as a distinct type, so that it
// cannot be mixed up with a host pointer, a size or an offset by accident.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>

#include "base/checked_math.h"

namespace kvmm {

class GuestAddress {
public:
    constexpr GuestAddress() = default;
    constexpr explicit GuestAddress(uint64_t value) : m_value(value) {}

    constexpr uint64_t value() const { return m_value; }

    // Unchecked offset for addresses that are constants of the memory layout.
    constexpr GuestAddress offset(uint64_t bytes) const { return GuestAddress(m_value + bytes); }
    // Checked offset for anything derived from guest or file input.
    std::optional<GuestAddress> checked_offset(uint64_t bytes) const {
        auto sum = checked_add(m_value, bytes);
        if (!sum)
            return std::nullopt;
        return GuestAddress(*sum);
    }

    // clang-tidy 14 reads the defaulted comparison's literal 0 as a null pointer.
    constexpr auto operator<=>(GuestAddress const&) const = default; // NOLINT(modernize-use-nullptr)

private:
    uint64_t m_value { 0 };
};

} // namespace kvmm

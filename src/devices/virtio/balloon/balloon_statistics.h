// Memory statistics a virtio-balloon driver reports on the stats queue
// (virtio 1.2 section 5.5.6.3, struct virtio_balloon_stat), and their parser.
//
// The buffer comes from the guest, so the parser reads at most
// MAX_ENTRIES entries of 10 bytes, ignores a trailing partial entry and tags it
// does not know (later specification versions add tags), and never allocates.
//
// Threading: plain values and a pure function; the device guards its copy.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace kvmm::virtio {

// 5.5.6.3 "Memory Statistics Tags" (HTLB_* as added by Linux and virtio 1.3 drafts).
enum class StatTag : uint16_t {
    SwapIn = 0,
    SwapOut = 1,
    MajorFaults = 2,
    MinorFaults = 3,
    MemoryFree = 4,
    MemoryTotal = 5,
    MemoryAvailable = 6,
    DiskCaches = 7,
    HugetlbAllocations = 8,
    HugetlbFailures = 9,
};
inline constexpr size_t STAT_TAG_COUNT = 10;

// struct virtio_balloon_stat { le16 tag; le64 val; } is packed: 10 bytes per entry.
inline constexpr size_t STAT_ENTRY_SIZE = 10;

class BalloonStatistics {
public:
    // A guest buffer longer than this many entries has its tail ignored: Linux sends one entry
    // per known tag, so a longer buffer is either a newer driver or a hostile one.
    static constexpr size_t MAX_ENTRIES = 64;

    // The latest value the driver reported for `tag`, if it ever reported one.
    std::optional<uint64_t> get(StatTag tag) const { return m_values[static_cast<size_t>(tag)]; }
    // How many stats buffers have been parsed into this object.
    uint64_t updates() const { return m_updates; }

    // Parses one buffer of packed entries: each known tag's value replaces the previous one.
    // Returns how many entries (known or not) were read.
    size_t parse(std::span<std::byte const> buffer);

    // The values as a table indexed by tag, for saved state, and back.
    using Values = std::array<std::optional<uint64_t>, STAT_TAG_COUNT>;
    Values const& values() const { return m_values; }
    static BalloonStatistics from(Values const& values, uint64_t updates) {
        BalloonStatistics statistics;
        statistics.m_values = values;
        statistics.m_updates = updates;
        return statistics;
    }
    bool operator==(BalloonStatistics const&) const = default;

private:
    std::array<std::optional<uint64_t>, STAT_TAG_COUNT> m_values {};
    uint64_t m_updates { 0 };
};

} // namespace kvmm::virtio

#include "devices/virtio/balloon/balloon_statistics.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvmm::virtio {
namespace {

void append_entry(std::vector<std::byte>& buffer, uint16_t tag, uint64_t value) {
    for (unsigned i = 0; i < 2; ++i)
        buffer.push_back(static_cast<std::byte>(tag >> (8 * i)));
    for (unsigned i = 0; i < 8; ++i)
        buffer.push_back(static_cast<std::byte>(value >> (8 * i)));
}

TEST(BalloonStatistics, KnownTagsAreStoredLittleEndian) {
    std::vector<std::byte> buffer;
    append_entry(buffer, 4, 0x1122334455667788);
    append_entry(buffer, 9, 7);
    BalloonStatistics statistics;
    EXPECT_EQ(statistics.parse(buffer), 2u);
    EXPECT_EQ(statistics.get(StatTag::MemoryFree), 0x1122334455667788u);
    EXPECT_EQ(statistics.get(StatTag::HugetlbFailures), 7u);
    EXPECT_FALSE(statistics.get(StatTag::SwapIn));
    EXPECT_EQ(statistics.updates(), 1u);
}

TEST(BalloonStatistics, UnknownTagsAreIgnored) {
    std::vector<std::byte> buffer;
    append_entry(buffer, 10, 1);
    append_entry(buffer, 0xffff, 2);
    append_entry(buffer, 0, 3);
    BalloonStatistics statistics;
    EXPECT_EQ(statistics.parse(buffer), 3u);
    EXPECT_EQ(statistics.get(StatTag::SwapIn), 3u);
    for (size_t tag = 1; tag < STAT_TAG_COUNT; ++tag)
        EXPECT_FALSE(statistics.get(static_cast<StatTag>(tag))) << tag;
}

TEST(BalloonStatistics, TrailingPartialEntryIsIgnored) {
    std::vector<std::byte> buffer;
    append_entry(buffer, 5, 100);
    append_entry(buffer, 6, 200);
    buffer.resize(buffer.size() - 1);
    BalloonStatistics statistics;
    EXPECT_EQ(statistics.parse(buffer), 1u);
    EXPECT_EQ(statistics.get(StatTag::MemoryTotal), 100u);
    EXPECT_FALSE(statistics.get(StatTag::MemoryAvailable));
}

TEST(BalloonStatistics, EntriesBeyondTheLimitAreIgnored) {
    std::vector<std::byte> buffer;
    for (size_t i = 0; i < BalloonStatistics::MAX_ENTRIES; ++i)
        append_entry(buffer, 1, i);
    append_entry(buffer, 2, 42); // one past the limit
    BalloonStatistics statistics;
    EXPECT_EQ(statistics.parse(buffer), BalloonStatistics::MAX_ENTRIES);
    EXPECT_EQ(statistics.get(StatTag::SwapOut), BalloonStatistics::MAX_ENTRIES - 1);
    EXPECT_FALSE(statistics.get(StatTag::MajorFaults));
}

TEST(BalloonStatistics, LaterBufferReplacesValuesAndKeepsOthers) {
    std::vector<std::byte> first;
    append_entry(first, 4, 10);
    append_entry(first, 7, 20);
    std::vector<std::byte> second;
    append_entry(second, 4, 11);
    BalloonStatistics statistics;
    statistics.parse(first);
    statistics.parse(second);
    EXPECT_EQ(statistics.get(StatTag::MemoryFree), 11u);
    EXPECT_EQ(statistics.get(StatTag::DiskCaches), 20u);
    EXPECT_EQ(statistics.updates(), 2u);
}

} // namespace
} // namespace kvmm::virtio

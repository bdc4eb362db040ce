#include "backends/disk/disk_engine.h"

#include "backends/disk/io_uring_engine.h"
#include "backends/disk/test_files.h"
#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

namespace kvmm {
namespace {

using testing::TemporaryDirectory;

constexpr unsigned QUEUE_DEPTH = 64;

// Waits (up to 10 s per wake-up) until `count` completions have been reaped.
std::vector<DiskCompletion> wait_for(DiskEngine& engine, size_t count) {
    std::vector<DiskCompletion> completions;
    while (completions.size() < count) {
        pollfd wait { .fd = engine.completion_fd(), .events = POLLIN, .revents = 0 };
        if (::poll(&wait, 1, 10'000) != 1) {
            ADD_FAILURE() << "no completion within 10 s; have " << completions.size() << " of " << count;
            break;
        }
        auto batch = engine.reap_all();
        completions.insert(completions.end(), batch.begin(), batch.end());
    }
    return completions;
}

int32_t run_one(DiskEngine& engine) {
    auto completions = wait_for(engine, 1);
    return completions.size() == 1 ? completions[0].result : INT32_MIN;
}

std::string kind_name(::testing::TestParamInfo<DiskEngineKind> const& info) {
    return info.param == DiskEngineKind::IoUring ? "IoUring" : "Sync";
}

class DiskEngineTest : public ::testing::TestWithParam<DiskEngineKind> {
protected:
    void SetUp() override {
        m_path = (m_directory / "disk.img");
        m_original = testing::make_pattern(1024 * 1024, 9);
        testing::write_file(m_path, m_original);
    }

    std::unique_ptr<DiskEngine> make_engine(DiskImage& image, bool write_through = false,
                                            unsigned depth = QUEUE_DEPTH) {
        if (GetParam() == DiskEngineKind::IoUring) {
            auto probe = IoUringEngine::create(image, write_through, depth);
            if (!probe) {
                m_skip_reason = probe.error().message();
                return nullptr;
            }
            return std::move(*probe);
        }
        auto engine = MUST(create_engine(GetParam(), image, write_through, depth));
        EXPECT_EQ(engine->kind(), GetParam());
        return engine;
    }

    TemporaryDirectory m_directory;
    std::string m_path;
    std::vector<std::byte> m_original;
    std::string m_skip_reason;
};

#define MAKE_ENGINE_OR_SKIP(engine, ...)                                                                               \
    auto engine = make_engine(__VA_ARGS__);                                                                            \
    if (!engine)                                                                                                       \
    GTEST_SKIP() << "io_uring is unavailable here: " << m_skip_reason

TEST_P(DiskEngineTest, MultiSegmentWriteThenRead_RoundTrips) {
    auto image = MUST(DiskImage::open(m_path, false));
    MAKE_ENGINE_OR_SKIP(engine, image);
    auto const data = testing::make_pattern(512 + 4096 + 1000, 42);
    std::vector<std::byte> copy = data;
    std::vector<iovec> pieces { { copy.data(), 512 }, { copy.data() + 512, 4096 }, { copy.data() + 4608, 1000 } };
    MUST(engine->write(7, 8192 + 3, pieces));
    MUST(engine->flush_submissions());
    auto written = wait_for(*engine, 1);
    ASSERT_EQ(written.size(), 1u);
    EXPECT_EQ(written[0], (DiskCompletion { 7, static_cast<int32_t>(data.size()) }));
    EXPECT_EQ(testing::read_range(m_path, 8192 + 3, data.size()), data);

    // Read it back cut differently, with the data straddling segment boundaries.
    std::vector<std::byte> first(3000);
    std::vector<std::byte> second(data.size() - 3000);
    std::vector<iovec> targets { { first.data(), first.size() }, { second.data(), second.size() } };
    MUST(engine->read(8, 8192 + 3, targets));
    MUST(engine->flush_submissions());
    auto read = wait_for(*engine, 1);
    ASSERT_EQ(read.size(), 1u);
    EXPECT_EQ(read[0], (DiskCompletion { 8, static_cast<int32_t>(data.size()) }));
    first.insert(first.end(), second.begin(), second.end());
    EXPECT_EQ(first, data);
    EXPECT_EQ(engine->in_flight(), 0u);
}

TEST_P(DiskEngineTest, WriteThrough_WritesAndZeroesReachTheFile) {
    auto image = MUST(DiskImage::open(m_path, false));
    MAKE_ENGINE_OR_SKIP(engine, image, true);
    auto data = testing::make_pattern(4096, 11);
    iovec segment { data.data(), data.size() };
    MUST(engine->write(1, 0, { &segment, 1 }));
    MUST(engine->write_zeroes(2, 65536, 8192, false));
    MUST(engine->flush(3));
    MUST(engine->flush_submissions());
    auto completions = wait_for(*engine, 3);
    std::sort(completions.begin(), completions.end(), [](auto& a, auto& b) { return a.tag < b.tag; });
    ASSERT_EQ(completions.size(), 3u);
    EXPECT_EQ(completions[0], (DiskCompletion { 1, 4096 }));
    EXPECT_EQ(completions[1], (DiskCompletion { 2, 0 }));
    EXPECT_EQ(completions[2], (DiskCompletion { 3, 0 }));
    EXPECT_EQ(testing::read_range(m_path, 0, 4096), data);
    EXPECT_TRUE(testing::all_zero(testing::read_range(m_path, 65536, 8192)));
}

TEST_P(DiskEngineTest, Discard_ReadsBackZerosAndFreesTheSpace) {
    auto image = MUST(DiskImage::open(m_path, false));
    MAKE_ENGINE_OR_SKIP(engine, image);
    uint64_t const before = testing::allocated_bytes(m_path);
    MUST(engine->discard(5, 256 * 1024, 512 * 1024));
    MUST(engine->flush_submissions());
    EXPECT_EQ(run_one(*engine), 0);
    EXPECT_TRUE(testing::all_zero(testing::read_range(m_path, 256 * 1024, 512 * 1024)));
    EXPECT_EQ(testing::read_range(m_path, 0, 256 * 1024),
              std::vector<std::byte>(m_original.begin(), m_original.begin() + 256 * 1024));
    EXPECT_LE(testing::allocated_bytes(m_path), before - 512 * 1024);
    EXPECT_EQ(image.size_bytes(), m_original.size());
}

TEST_P(DiskEngineTest, WriteZeroes_UnmapFreesSpaceAndNoUnmapKeepsIt) {
    auto image = MUST(DiskImage::open(m_path, false));
    MAKE_ENGINE_OR_SKIP(engine, image);
    uint64_t const before = testing::allocated_bytes(m_path);
    MUST(engine->write_zeroes(1, 0, 256 * 1024, false));
    MUST(engine->flush_submissions());
    EXPECT_EQ(run_one(*engine), 0);
    EXPECT_TRUE(testing::all_zero(testing::read_range(m_path, 0, 256 * 1024)));
    EXPECT_GE(testing::allocated_bytes(m_path), before);

    MUST(engine->write_zeroes(2, 512 * 1024, 256 * 1024, true));
    MUST(engine->flush_submissions());
    EXPECT_EQ(run_one(*engine), 0);
    EXPECT_TRUE(testing::all_zero(testing::read_range(m_path, 512 * 1024, 256 * 1024)));
    EXPECT_LE(testing::allocated_bytes(m_path), before - 256 * 1024);
    // Neither changes the size, and the bytes around are intact.
    struct stat status {};
    ASSERT_EQ(::stat(m_path.c_str(), &status), 0);
    EXPECT_EQ(static_cast<uint64_t>(status.st_size), m_original.size());
    EXPECT_EQ(testing::read_range(m_path, 256 * 1024, 256 * 1024),
              std::vector<std::byte>(m_original.begin() + 256 * 1024, m_original.begin() + 512 * 1024));
}

TEST_P(DiskEngineTest, ReadPastTheEnd_ReturnsTheBytesBeforeItAndLeavesTheRest) {
    auto image = MUST(DiskImage::open(m_path, true));
    MAKE_ENGINE_OR_SKIP(engine, image);
    uint64_t const size = m_original.size();
    std::vector<std::byte> buffer(4096, std::byte { 0xaa });
    std::vector<iovec> halves { { buffer.data(), 2048 }, { buffer.data() + 2048, 2048 } };
    MUST(engine->read(1, size - 1000, halves));
    MUST(engine->flush_submissions());
    EXPECT_EQ(run_one(*engine), 1000);
    EXPECT_TRUE(std::equal(buffer.begin(), buffer.begin() + 1000, m_original.end() - 1000));
    EXPECT_TRUE(std::all_of(buffer.begin() + 1000, buffer.end(), [](std::byte b) { return b == std::byte { 0xaa }; }));

    MUST(engine->read(2, size + 4096, halves));
    MUST(engine->flush_submissions());
    EXPECT_EQ(run_one(*engine), 0);
}

TEST_P(DiskEngineTest, ReadOnlyImage_RefusesWritesDiscardsAndZeroesWithErofs) {
    auto image = MUST(DiskImage::open(m_path, true));
    MAKE_ENGINE_OR_SKIP(engine, image);
    auto data = testing::make_pattern(512, 12);
    iovec segment { data.data(), data.size() };
    MUST(engine->write(1, 0, { &segment, 1 }));
    MUST(engine->discard(2, 0, 4096));
    MUST(engine->write_zeroes(3, 0, 4096, true));
    MUST(engine->read(4, 0, { &segment, 1 }));
    MUST(engine->flush_submissions());
    std::map<uint64_t, int32_t> results;
    for (auto completion : wait_for(*engine, 4))
        results[completion.tag] = completion.result;
    EXPECT_EQ(results, (std::map<uint64_t, int32_t> { { 1, -EROFS }, { 2, -EROFS }, { 3, -EROFS }, { 4, 512 } }));
    EXPECT_EQ(testing::read_range(m_path, 0, 512),
              std::vector<std::byte>(m_original.begin(), m_original.begin() + 512));
}

TEST_P(DiskEngineTest, TooManySegments_CompletesWithEinval) {
    auto image = MUST(DiskImage::open(m_path, false));
    MAKE_ENGINE_OR_SKIP(engine, image);
    std::byte byte {};
    std::vector<iovec> segments(1025, iovec { &byte, 1 });
    MUST(engine->read(1, 0, segments));
    MUST(engine->flush_submissions());
    EXPECT_EQ(run_one(*engine), -EINVAL);
}

TEST_P(DiskEngineTest, FullEngine_RefusesWithEagainUntilReaped) {
    auto image = MUST(DiskImage::open(m_path, false));
    MAKE_ENGINE_OR_SKIP(engine, image, false, 4);
    EXPECT_EQ(engine->capacity(), 4u);
    std::vector<std::byte> buffer(4 * 512);
    for (uint64_t tag = 0; tag < 4; ++tag) {
        iovec segment { buffer.data() + tag * 512, 512 };
        MUST(engine->read(tag, tag * 512, { &segment, 1 }));
    }
    EXPECT_EQ(engine->in_flight(), 4u);
    iovec extra { buffer.data(), 512 };
    auto refused = engine->read(99, 0, { &extra, 1 });
    ASSERT_FALSE(refused.has_value());
    EXPECT_EQ(refused.error().error_number(), EAGAIN);
    auto refused_flush = engine->flush(99);
    ASSERT_FALSE(refused_flush.has_value());
    EXPECT_EQ(refused_flush.error().error_number(), EAGAIN);

    MUST(engine->flush_submissions());
    EXPECT_EQ(wait_for(*engine, 4).size(), 4u);
    EXPECT_EQ(engine->in_flight(), 0u);
    MUST(engine->read(99, 0, { &extra, 1 }));
    MUST(engine->flush_submissions());
    EXPECT_EQ(run_one(*engine), 512);
    EXPECT_EQ(buffer, std::vector<std::byte>(m_original.begin(), m_original.begin() + 4 * 512));
}

TEST_P(DiskEngineTest, BatchOfRequests_EachTagCompletesOnce) {
    auto image = MUST(DiskImage::open(m_path, false));
    MAKE_ENGINE_OR_SKIP(engine, image);
    // Distinct 4 KiB blocks, each written from its own buffer in two segments.
    std::vector<std::vector<std::byte>> blocks;
    for (unsigned i = 0; i < QUEUE_DEPTH; ++i)
        blocks.push_back(testing::make_pattern(4096, static_cast<uint8_t>(100 + i)));
    for (unsigned i = 0; i < QUEUE_DEPTH; ++i) {
        iovec segments[2] = { { blocks[i].data(), 1024 }, { blocks[i].data() + 1024, 3072 } };
        MUST(engine->write(1000 + i, uint64_t { i } * 4096, segments));
    }
    MUST(engine->flush_submissions());
    // Reap in small batches through the span interface, as the device will.
    std::map<uint64_t, int32_t> results;
    std::array<DiskCompletion, 5> batch {};
    while (results.size() < QUEUE_DEPTH) {
        pollfd wait { .fd = engine->completion_fd(), .events = POLLIN, .revents = 0 };
        ASSERT_EQ(::poll(&wait, 1, 10'000), 1) << results.size() << " completions so far";
        size_t const count = engine->reap(batch);
        for (size_t i = 0; i < count; ++i)
            EXPECT_TRUE(results.emplace(batch[i].tag, batch[i].result).second) << "tag twice: " << batch[i].tag;
    }
    for (unsigned i = 0; i < QUEUE_DEPTH; ++i) {
        EXPECT_EQ(results[1000 + i], 4096) << i;
        EXPECT_EQ(testing::read_range(m_path, uint64_t { i } * 4096, 4096), blocks[i]) << i;
    }
    pollfd idle { .fd = engine->completion_fd(), .events = POLLIN, .revents = 0 };
    EXPECT_EQ(::poll(&idle, 1, 0), 0); // nothing left: the fd is quiet
}

INSTANTIATE_TEST_SUITE_P(Engines, DiskEngineTest, ::testing::Values(DiskEngineKind::IoUring, DiskEngineKind::Sync),
                         kind_name);

TEST(DiskEngine, IoUringSetupFailure_FallsBackToTheSyncEngine) {
    TemporaryDirectory directory;
    auto const path = (directory / "fallback.img");
    testing::write_file(path, testing::make_pattern(8192, 13));
    auto image = MUST(DiskImage::open(path, false));
    fail_io_uring_setup_for_testing(EPERM);
    auto engine = create_engine(DiskEngineKind::IoUring, image, false, 8);
    fail_io_uring_setup_for_testing(0);
    ASSERT_TRUE(engine.has_value()) << engine.error().message();
    EXPECT_EQ((*engine)->kind(), DiskEngineKind::Sync);
    // The fallback is a working engine.
    std::vector<std::byte> buffer(512);
    iovec segment { buffer.data(), buffer.size() };
    MUST((*engine)->read(1, 512, { &segment, 1 }));
    MUST((*engine)->flush_submissions());
    EXPECT_EQ(run_one(**engine), 512);
    EXPECT_EQ(buffer, testing::read_range(path, 512, 512));
}

TEST(DiskEngine, QueueDepthOutOfRange_IsRejected) {
    TemporaryDirectory directory;
    auto const path = (directory / "depth.img");
    testing::write_file(path, testing::make_pattern(512, 14));
    auto image = MUST(DiskImage::open(path, false));
    for (unsigned depth : { 0u, 4097u }) {
        auto engine = create_engine(DiskEngineKind::Sync, image, false, depth);
        ASSERT_FALSE(engine.has_value());
        EXPECT_NE(engine.error().message().find(std::to_string(depth)), std::string::npos);
    }
}

} // namespace
} // namespace kvmm

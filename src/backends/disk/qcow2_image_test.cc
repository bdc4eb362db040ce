// Tests of the qcow2 layer against Debian's qemu-img: images made by one are used by the other,
// and every image kvmm wrote must pass `qemu-img check` (exit 0, or 3 for leaked clusters only
// after a simulated crash) and `qemu-img compare` with the raw content expected.
#include "backends/disk/disk_engine.h"
#include "backends/disk/disk_image.h"
#include "backends/disk/qcow2_image.h"
#include "backends/disk/test_files.h"
#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>

namespace kvmm {
namespace {

using kvmm::testing::make_pattern;
using kvmm::testing::TemporaryDirectory;

constexpr uint64_t MIB = 1 << 20;

bool have_qemu_img() { return std::system("qemu-img --version >/dev/null 2>&1") == 0; }

#define REQUIRE_QEMU_IMG()                                                                                             \
    if (!have_qemu_img())                                                                                              \
    GTEST_SKIP() << "qemu-img is not installed (Debian package qemu-utils; tools/install-deps.sh installs it)"

// Runs a shell command; returns its exit status (-1 when it did not exit).
int run(std::string const& command) {
    int const status = std::system((command + " >/tmp/kvmm-qemu-img.log 2>&1").c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string last_output() {
    std::ifstream in("/tmp/kvmm-qemu-img.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// 0: clean; 3: leaked clusters only (allowed after a crash); 2: corruption.
int qemu_img_check(std::string const& path) { return run("qemu-img check -f qcow2 '" + path + "'"); }

int32_t read_at(qcow2::Image& image, uint64_t offset, std::vector<std::byte>& out) {
    iovec const buffer { out.data(), out.size() };
    return image.read(offset, std::span(&buffer, 1));
}

int32_t write_at(qcow2::Image& image, uint64_t offset, std::vector<std::byte> const& data) {
    iovec const buffer { const_cast<std::byte*>(data.data()), data.size() };
    return image.write(offset, std::span(&buffer, 1));
}

// The raw image the writes below should produce, kept alongside.
struct Expected {
    std::vector<std::byte> bytes;
    void write(uint64_t offset, std::vector<std::byte> const& data) {
        std::copy(data.begin(), data.end(), bytes.begin() + static_cast<std::ptrdiff_t>(offset));
    }
    void zero(uint64_t offset, uint64_t length) {
        std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(offset), length, std::byte { 0 });
    }
};

// A mix of writes: within a cluster, across clusters, whole clusters, into a second L2 table.
// Returns false at the first failed write.
bool try_write_mix(qcow2::Image& image, Expected& expected) {
    struct Step {
        uint64_t offset;
        size_t length;
        uint8_t seed;
    };
    for (auto const& step : { Step { 4096, 512, 1 }, Step { 65536 - 1024, 8192, 2 }, Step { 3 * MIB, 256 * 1024, 3 },
                              Step { 700 * 512, 70000, 4 }, Step { 9 * MIB + 4096, 4096, 5 }, Step { 0, 512, 6 } }) {
        auto const data = make_pattern(step.length, step.seed);
        if (write_at(image, step.offset, data) != static_cast<int32_t>(step.length))
            return false;
        expected.write(step.offset, data);
    }
    return true;
}

void write_mix(qcow2::Image& image, Expected& expected) { ASSERT_TRUE(try_write_mix(image, expected)); }

void expect_content(qcow2::Image& image, std::vector<std::byte> const& expected) {
    std::vector<std::byte> got(expected.size());
    ASSERT_EQ(read_at(image, 0, got), static_cast<int32_t>(expected.size()));
    EXPECT_TRUE(got == expected);
}

TEST(Qcow2Image, WrittenByKvmmReadsBackAndPassesQemuImgCheckAndCompare) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    std::string const path = (directory / "disk.qcow2");
    MUST(qcow2::Image::create(path, 16 * MIB, {}));
    Expected expected { std::vector<std::byte>(16 * MIB) };
    {
        auto image = MUST(DiskImage::open(path, false, DiskFormat::Qcow2));
        EXPECT_EQ(image.size_bytes(), 16 * MIB);
        write_mix(*image.qcow2(), expected);
        expect_content(*image.qcow2(), expected.bytes);
        ASSERT_EQ(image.qcow2()->flush(), 0);
    }
    testing::write_file((directory / "expected.raw"), expected.bytes);
    EXPECT_EQ(qemu_img_check(path), 0) << last_output();
    EXPECT_EQ(run("qemu-img compare -f qcow2 -F raw '" + path + "' '" + (directory / "expected.raw") + "'"), 0)
        << last_output();
    // And again after reopening: the metadata on disk says the same.
    auto image = MUST(DiskImage::open(path, true, DiskFormat::Qcow2));
    expect_content(*image.qcow2(), expected.bytes);
}

// A write that replaces whole clusters of an empty image takes one contiguous, aligned run of
// host clusters (one allocation, one write), so the data lies as in a raw file; a partial cluster
// at either end still goes through copy-on-write.
TEST(Qcow2Image, AWriteOfWholeClustersIsAllocatedAsOneContiguousRun) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    std::string const path = (directory / "runs.qcow2");
    MUST(qcow2::Image::create(path, 16 * MIB, {}));
    Expected expected { std::vector<std::byte>(16 * MIB) };
    {
        auto image = MUST(DiskImage::open(path, false, DiskFormat::Qcow2));
        auto const whole = make_pattern(MIB, 7);
        ASSERT_EQ(write_at(*image.qcow2(), 2 * MIB, whole), static_cast<int32_t>(MIB));
        expected.write(2 * MIB, whole);
        auto const extent = MUST(image.qcow2()->map(2 * MIB, MIB));
        EXPECT_EQ(extent.kind, qcow2::ExtentKind::Data);
        EXPECT_EQ(extent.length, MIB) << "the 16 clusters are one contiguous host extent";
        EXPECT_EQ(extent.host_offset % MIB, 0u) << "a run is aligned like its size, for the host's large folios";
        // Unaligned at both ends: two partial clusters around 15 whole ones.
        auto const ragged = make_pattern(MIB, 9);
        ASSERT_EQ(write_at(*image.qcow2(), 8 * MIB + 512, ragged), static_cast<int32_t>(MIB));
        expected.write(8 * MIB + 512, ragged);
        expect_content(*image.qcow2(), expected.bytes);
        ASSERT_EQ(image.qcow2()->flush(), 0);
    }
    testing::write_file((directory / "expected.raw"), expected.bytes);
    EXPECT_EQ(qemu_img_check(path), 0) << last_output();
    EXPECT_EQ(run("qemu-img compare -f qcow2 -F raw '" + path + "' '" + (directory / "expected.raw") + "'"), 0)
        << last_output();
}

TEST(Qcow2Image, ImagesMadeByQemuImgAreReadAndWritten) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    std::string const path = (directory / "made.qcow2");
    ASSERT_EQ(run("qemu-img create -f qcow2 -o compression_type=zlib,cluster_size=4096 '" + path + "' 12M"), 0)
        << last_output();
    Expected expected { std::vector<std::byte>(12 * MIB) };
    {
        auto image = MUST(DiskImage::open(path, false, DiskFormat::Qcow2));
        write_mix(*image.qcow2(), expected);
    }
    testing::write_file((directory / "expected.raw"), expected.bytes);
    EXPECT_EQ(qemu_img_check(path), 0) << last_output();
    EXPECT_EQ(run("qemu-img compare -f qcow2 -F raw '" + path + "' '" + (directory / "expected.raw") + "'"), 0)
        << last_output();
}

TEST(Qcow2Image, CompressedClustersFromQemuImgConvertReadExactly) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    // Compressible but not trivial: a repeating pattern with a few distinct clusters.
    std::vector<std::byte> raw(4 * MIB);
    auto const pattern = make_pattern(3000, 7);
    for (size_t i = 0; i < raw.size(); ++i)
        raw[i] = pattern[i % pattern.size()] & std::byte { 0x0f };
    testing::write_file((directory / "source.raw"), raw);
    std::string const path = (directory / "compressed.qcow2");
    ASSERT_EQ(run("qemu-img convert -c -f raw -O qcow2 '" + (directory / "source.raw") + "' '" + path + "'"), 0)
        << last_output();
    auto image = MUST(DiskImage::open(path, false, DiskFormat::Qcow2));
    expect_content(*image.qcow2(), raw);
    // A write into a compressed cluster copies it out; the rest still reads the same.
    auto const data = make_pattern(1000, 9);
    ASSERT_EQ(write_at(*image.qcow2(), 70000, data), 1000);
    std::copy(data.begin(), data.end(), raw.begin() + 70000);
    expect_content(*image.qcow2(), raw);
    ASSERT_EQ(image.qcow2()->flush(), 0);
    EXPECT_EQ(qemu_img_check(path), 0) << last_output();
}

TEST(Qcow2Image, OverlayReadsTheBackingFileAndWritesOnlyTheOverlay) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    auto const base_content = make_pattern(8 * MIB, 11);
    testing::write_file((directory / "base.raw"), base_content);
    ASSERT_EQ(run("qemu-img create -f qcow2 -F raw -b base.raw '" + (directory / "mid.qcow2") + "'"), 0)
        << last_output();
    ASSERT_EQ(run("qemu-img create -f qcow2 -F qcow2 -b mid.qcow2 '" + (directory / "top.qcow2") + "' 10M"), 0)
        << last_output();
    Expected expected { base_content };
    expected.bytes.resize(10 * MIB); // past the base: zeros
    {
        auto image = MUST(DiskImage::open((directory / "top.qcow2"), false, DiskFormat::Qcow2));
        expect_content(*image.qcow2(), expected.bytes);
        write_mix(*image.qcow2(), expected);
        // Zeroing and discarding whole clusters must not let the base show through.
        ASSERT_EQ(image.qcow2()->write_zeroes(5 * MIB, 3 * 65536 + 100), 0);
        expected.zero(5 * MIB, 3 * 65536 + 100);
        ASSERT_EQ(image.qcow2()->discard(6 * MIB, 2 * 65536), 0);
        expected.zero(6 * MIB, 2 * 65536);
        expect_content(*image.qcow2(), expected.bytes);
        // The backing files are locked shared: readers may join, writers may not.
        EXPECT_TRUE(DiskImage::open((directory / "base.raw"), true).has_value());
        EXPECT_FALSE(DiskImage::open((directory / "base.raw"), false).has_value());
    }
    EXPECT_TRUE(testing::read_range((directory / "base.raw"), 0, 8 * MIB) == base_content);
    testing::write_file((directory / "expected.raw"), expected.bytes);
    EXPECT_EQ(qemu_img_check((directory / "top.qcow2")), 0) << last_output();
    EXPECT_EQ(run("qemu-img compare -f qcow2 -F raw '" + (directory / "top.qcow2") + "' '" +
                  (directory / "expected.raw") + "'"),
              0)
        << last_output();
}

TEST(Qcow2Image, TheRefcountTableGrowsAndStaysConsistent) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    std::string const path = (directory / "small-clusters.qcow2");
    // 512-byte clusters: one refcount table cluster covers 64 blocks of 256 clusters, 8 MiB.
    MUST(qcow2::Image::create(path, 24 * MIB,
                              qcow2::CreateOptions { .cluster_bits = 9, .backing_file = {}, .backing_format = {} }));
    Expected expected { std::vector<std::byte>(24 * MIB) };
    {
        auto image = MUST(DiskImage::open(path, false, DiskFormat::Qcow2));
        for (uint64_t offset = 0; offset < 12 * MIB; offset += 96 * 1024) {
            auto const data = make_pattern(64 * 1024 + 512, static_cast<uint8_t>(offset / 4096));
            ASSERT_EQ(write_at(*image.qcow2(), offset, data), static_cast<int32_t>(data.size()));
            expected.write(offset, data);
        }
        EXPECT_GT(image.qcow2()->header().refcount_table_clusters, 1u);
        expect_content(*image.qcow2(), expected.bytes);
    }
    testing::write_file((directory / "expected.raw"), expected.bytes);
    EXPECT_EQ(qemu_img_check(path), 0) << last_output();
    EXPECT_EQ(run("qemu-img compare -f qcow2 -F raw '" + path + "' '" + (directory / "expected.raw") + "'"), 0)
        << last_output();
}

// Cuts the write sequence after each of its file-changing system calls (the hook makes every
// later one fail, as if the machine had stopped) and checks that qemu-img finds no corruption.
TEST(Qcow2Image, ACrashAfterAnySystemCallLeavesNoCorruption) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    std::string const pristine = (directory / "pristine.qcow2");
    MUST(qcow2::Image::create(pristine, 10 * MIB,
                              qcow2::CreateOptions { .cluster_bits = 12, .backing_file = {}, .backing_format = {} }));
    auto sequence = [](qcow2::Image& image) {
        Expected ignored { std::vector<std::byte>(10 * MIB) };
        (void)try_write_mix(image, ignored);
        (void)image.flush();
        (void)image.write_zeroes(3 * MIB, 64 * 1024);
        (void)image.discard(9 * MIB, 8192);
        (void)write_at(image, 2 * MIB, make_pattern(40000, 3));
        (void)image.flush();
    };
    int cuts = 0;
    for (int64_t cut = 0;; ++cut) {
        std::string const path = (directory / "crash.qcow2");
        ASSERT_EQ(run("cp '" + pristine + "' '" + path + "'"), 0);
        int64_t made = 0;
        {
            auto image = MUST(DiskImage::open(path, false, DiskFormat::Qcow2));
            (void)qcow2::fail_file_changes_after_for_testing(cut);
            sequence(*image.qcow2());
        } // the close's own write-back fails too: the machine is gone
        made = qcow2::fail_file_changes_after_for_testing(-1);
        int const check = qemu_img_check(path);
        EXPECT_TRUE(check == 0 || check == 3) << "cut after " << cut << " calls: " << last_output();
        ++cuts;
        if (made <= cut)
            break; // the whole sequence ran before the cut
        ASSERT_LT(cut, 2000) << "the sequence does not end";
    }
    EXPECT_GT(cuts, 10);
}

TEST(Qcow2Image, CorruptTablesAreRefusedWithTheFieldNamed) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    std::string const path = (directory / "corrupt.qcow2");
    MUST(qcow2::Image::create(path, 4 * MIB, {}));
    auto poke = [&](uint64_t offset, uint64_t value) {
        std::vector<std::byte> bytes(8);
        qcow2::store_be64(bytes.data(), value);
        int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        ASSERT_EQ(::pwrite(fd, bytes.data(), 8, static_cast<off_t>(offset)), 8);
        ::close(fd);
    };
    // Layout of a created image: refcount table in cluster 1, L1 table in cluster 3.
    poke(3 * 65536, qcow2::ENTRY_COPIED | (1000 * 65536));
    auto refused = DiskImage::open(path, false, DiskFormat::Qcow2);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().message().find("L1 entry 0"), std::string::npos) << refused.error().message();
    poke(3 * 65536, qcow2::ENTRY_COPIED | (1 * 65536)); // the L2 table would be the refcount table
    refused = DiskImage::open(path, false, DiskFormat::Qcow2);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().message().find("overlaps"), std::string::npos) << refused.error().message();
    poke(3 * 65536, 0);
    poke(65536, 5 * 65536 + 8); // refcount table entry 0: unaligned
    refused = DiskImage::open(path, false, DiskFormat::Qcow2);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().message().find("refcount table entry 0"), std::string::npos) << refused.error().message();
}

TEST(Qcow2Image, AnL2EntryIntoMetadataFailsTheRequestNotTheProcess) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    std::string const path = (directory / "hostile.qcow2");
    MUST(qcow2::Image::create(path, 4 * MIB, {}));
    {
        auto image = MUST(DiskImage::open(path, false, DiskFormat::Qcow2));
        ASSERT_EQ(write_at(*image.qcow2(), 0, make_pattern(512, 1)), 512);
    }
    // Point guest cluster 1 at the refcount block (cluster 2) in the L2 table that L1 entry 0 names.
    uint64_t const l2_offset = qcow2::load_be64(testing::read_range(path, 3 * 65536, 8).data()) & qcow2::OFFSET_MASK;
    std::vector<std::byte> bytes(8);
    qcow2::store_be64(bytes.data(), qcow2::ENTRY_COPIED | (2 * 65536));
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_EQ(::pwrite(fd, bytes.data(), 8, static_cast<off_t>(l2_offset + 8)), 8);
    ::close(fd);
    auto image = MUST(DiskImage::open(path, false, DiskFormat::Qcow2));
    std::vector<std::byte> data(512);
    EXPECT_EQ(read_at(*image.qcow2(), 65536, data), -EIO);
    EXPECT_EQ(write_at(*image.qcow2(), 65536, data), -EIO);
    EXPECT_EQ(read_at(*image.qcow2(), 0, data), 512);
}

TEST(Qcow2Image, BackingLoopsDeepChainsAndMissingFilesAreRefused) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    // a -> b -> a
    MUST(qcow2::Image::create(
        (directory / "a.qcow2"), MIB,
        { .cluster_bits = 16, .backing_file = "b.qcow2", .backing_format = qcow2::BackingFormat::Qcow2 }));
    MUST(qcow2::Image::create(
        (directory / "b.qcow2"), MIB,
        { .cluster_bits = 16, .backing_file = "a.qcow2", .backing_format = qcow2::BackingFormat::Qcow2 }));
    auto loop = DiskImage::open((directory / "a.qcow2"), true, DiskFormat::Qcow2);
    ASSERT_FALSE(loop.has_value());
    EXPECT_NE(loop.error().message().find("loop"), std::string::npos) << loop.error().message();

    testing::write_file((directory / "l0"), make_pattern(4096, 1));
    for (unsigned level = 1; level <= qcow2::MAX_BACKING_DEPTH + 1; ++level)
        MUST(qcow2::Image::create((directory / ("l" + std::to_string(level))), MIB,
                                  { .cluster_bits = 16,
                                    .backing_file = "l" + std::to_string(level - 1),
                                    .backing_format =
                                        level == 1 ? qcow2::BackingFormat::Raw : qcow2::BackingFormat::Qcow2 }));
    EXPECT_TRUE(DiskImage::open((directory / ("l" + std::to_string(qcow2::MAX_BACKING_DEPTH))), true, DiskFormat::Qcow2)
                    .has_value());
    auto deep =
        DiskImage::open((directory / ("l" + std::to_string(qcow2::MAX_BACKING_DEPTH + 1))), true, DiskFormat::Qcow2);
    ASSERT_FALSE(deep.has_value());
    EXPECT_NE(deep.error().message().find("deeper"), std::string::npos) << deep.error().message();

    MUST(qcow2::Image::create((directory / "orphan.qcow2"), MIB,
                              { .cluster_bits = 16, .backing_file = "gone.raw", .backing_format = {} }));
    auto missing = DiskImage::open((directory / "orphan.qcow2"), false, DiskFormat::Qcow2);
    ASSERT_FALSE(missing.has_value());
    EXPECT_NE(missing.error().message().find("gone.raw"), std::string::npos) << missing.error().message();
}

TEST(Qcow2Image, AQcow2FileOpenedAsRawIsNotInterpreted) {
    TemporaryDirectory directory;
    std::string const path = (directory / "looks-like.qcow2");
    MUST(qcow2::Image::create(path, 64 * MIB, {}));
    auto image = MUST(DiskImage::open(path, true));
    EXPECT_EQ(image.format(), DiskFormat::Raw);
    EXPECT_LT(image.size_bytes(), MIB); // the file's own size, not the virtual size
}

// Both engines serve a qcow2 image: reads of allocated, unallocated and backing clusters, and
// writes in place and allocating, through the asynchronous interface.
class Qcow2EngineTest : public ::testing::TestWithParam<DiskEngineKind> {};

std::vector<DiskCompletion> wait_for(DiskEngine& engine, size_t count) {
    std::vector<DiskCompletion> all;
    for (int round = 0; round < 500 && all.size() < count; ++round) {
        pollfd ready { engine.completion_fd(), POLLIN, 0 };
        ::poll(&ready, 1, 10);
        auto more = engine.reap_all();
        all.insert(all.end(), more.begin(), more.end());
    }
    return all;
}

TEST_P(Qcow2EngineTest, ServesReadsAndWritesOfEveryKind) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    auto const base_content = make_pattern(4 * MIB, 21);
    testing::write_file((directory / "base.raw"), base_content);
    std::string const path = (directory / "overlay.qcow2");
    MUST(qcow2::Image::create(path, 4 * MIB, { .cluster_bits = 16, .backing_file = "base.raw", .backing_format = {} }));
    Expected expected { base_content };
    {
        auto image = MUST(DiskImage::open(path, false, DiskFormat::Qcow2));
        auto engine = MUST(create_engine(GetParam(), image, false, 16));
        // Allocating writes first, then in-place writes into the same clusters.
        std::vector<std::vector<std::byte>> buffers;
        uint64_t tag = 0;
        for (uint64_t offset : { 0ul, 100000ul, 2 * MIB, 0ul, 100000ul + 4096 }) {
            buffers.push_back(make_pattern(20000, static_cast<uint8_t>(tag + 1)));
            iovec const buffer { buffers.back().data(), buffers.back().size() };
            MUST(engine->write(tag++, offset, std::span(&buffer, 1)));
            MUST(engine->flush_submissions());
            auto done = wait_for(*engine, 1);
            ASSERT_EQ(done.size(), 1u);
            EXPECT_EQ(done[0].result, 20000);
            expected.write(offset, buffers.back());
        }
        MUST(engine->flush(tag++));
        MUST(engine->write_zeroes(tag++, 3 * MIB, 65536, true));
        expected.zero(3 * MIB, 65536);
        std::vector<std::byte> got(4 * MIB);
        std::vector<iovec> pieces;
        for (size_t offset = 0; offset < got.size(); offset += 128 * 1024)
            pieces.push_back({ got.data() + offset, 128 * 1024 });
        MUST(engine->read(tag++, 0, pieces));
        MUST(engine->flush_submissions());
        auto done = wait_for(*engine, 3);
        ASSERT_EQ(done.size(), 3u);
        EXPECT_EQ(done[0].result, 0);
        EXPECT_EQ(done[1].result, 0);
        EXPECT_EQ(done[2].result, static_cast<int32_t>(4 * MIB));
        EXPECT_TRUE(got == expected.bytes);
        EXPECT_EQ(engine->in_flight(), 0u);
    }
    testing::write_file((directory / "expected.raw"), expected.bytes);
    EXPECT_EQ(qemu_img_check(path), 0) << last_output();
    EXPECT_EQ(run("qemu-img compare -f qcow2 -F raw '" + path + "' '" + (directory / "expected.raw") + "'"), 0)
        << last_output();
}

INSTANTIATE_TEST_SUITE_P(Engines, Qcow2EngineTest, ::testing::Values(DiskEngineKind::IoUring, DiskEngineKind::Sync),
                         [](auto const& test_info) {
                             return test_info.param == DiskEngineKind::IoUring ? "IoUring" : "Sync";
                         });

} // namespace
} // namespace kvmm

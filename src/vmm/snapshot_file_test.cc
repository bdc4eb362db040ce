#include "vmm/snapshot_file.h"

#include "base/state_io.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace kvmm {
namespace {

SnapshotFile sample() {
    SnapshotFile file;
    file.config_json = R"({"boot-source":{"kernel_image_path":"/k"}})";
    file.memory_layout = { { GuestAddress(0), 0xc0000000 }, { GuestAddress(0x100000000), 0x40000000 } };
    file.machine_state = { std::byte { 1 }, std::byte { 2 }, std::byte { 3 } };
    return file;
}

std::string decode_error(std::span<std::byte const> bytes) {
    auto decoded = SnapshotFile::decode(bytes, "snapshot file 'x'");
    return decoded ? std::string("decoded") : decoded.error().message();
}

TEST(SnapshotFile, RoundTripKeepsConfigurationLayoutAndState) {
    auto const file = sample();
    auto const decoded = SnapshotFile::decode(file.encode(), "test");
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(decoded->config_json, file.config_json);
    ASSERT_EQ(decoded->memory_layout.size(), 2u);
    EXPECT_EQ(decoded->memory_layout[1].start.value(), 0x100000000u);
    EXPECT_EQ(decoded->memory_layout[1].size, 0x40000000u);
    EXPECT_EQ(decoded->machine_state, file.machine_state);
    EXPECT_EQ(decoded->memory_size(), 0x100000000u);
}

TEST(SnapshotFile, TruncatedFileIsRefusedNamingTheFile) {
    auto const bytes = sample().encode();
    for (size_t length : { size_t { 0 }, size_t { 10 }, bytes.size() / 2, bytes.size() - 1 }) {
        auto const message = decode_error(std::span(bytes).first(length));
        EXPECT_NE(message.find("snapshot file 'x'"), std::string::npos) << message;
        EXPECT_NE(message, "decoded");
    }
}

TEST(SnapshotFile, CorruptedByteIsCaughtByTheChecksum) {
    auto bytes = sample().encode();
    bytes[bytes.size() - 2] ^= std::byte { 0x40 };
    EXPECT_NE(decode_error(bytes).find("checksum"), std::string::npos) << decode_error(bytes);
}

TEST(SnapshotFile, ForeignFileIsRefusedByItsMagic) {
    std::vector<std::byte> bytes(64, std::byte { 'A' });
    EXPECT_NE(decode_error(bytes).find("not a kvmm state file"), std::string::npos) << decode_error(bytes);
}

TEST(SnapshotFile, NewerSnapshotVersionIsRefusedNamingIt) {
    StateWriter writer;
    writer.begin_section(SnapshotFile::SECTION, SnapshotFile::VERSION + 1);
    writer.string("{}");
    writer.end_section();
    auto const message = decode_error(seal_state(writer.payload()));
    EXPECT_NE(message.find(fmt::format("version {}", SnapshotFile::VERSION + 1)), std::string::npos) << message;
}

TEST(SnapshotFile, OlderSnapshotVersionIsRefusedNamingIt) {
    StateWriter writer;
    writer.begin_section(SnapshotFile::SECTION, 1);
    writer.string("{}");
    writer.end_section();
    auto const message = decode_error(seal_state(writer.payload()));
    EXPECT_NE(message.find("version 1 is older"), std::string::npos) << message;
}

TEST(SnapshotFile, TheSnapshotTypeRoundTripsAndAnUnknownOneIsRefused) {
    auto file = sample();
    file.type = SnapshotType::Diff;
    EXPECT_EQ(MUST(SnapshotFile::decode(file.encode(), "test")).type, SnapshotType::Diff);
    file.type = static_cast<SnapshotType>(7);
    EXPECT_NE(decode_error(file.encode()).find("snapshot type 7"), std::string::npos) << decode_error(file.encode());
}

TEST(SnapshotFile, NewerContainerFormatIsRefusedNamingIt) {
    auto bytes = sample().encode();
    uint32_t const version = STATE_FORMAT_VERSION + 1;
    std::memcpy(bytes.data() + 8, &version, sizeof(version)); // after the magic
    auto const message = decode_error(bytes);
    EXPECT_NE(message.find("format version 2"), std::string::npos) << message;
}

TEST(SnapshotFile, AMachineStateBlobIsNotASnapshotFile) {
    StateWriter writer;
    writer.begin_section("machine", 1);
    writer.u32(1);
    writer.end_section();
    auto const message = decode_error(seal_state(writer.payload()));
    EXPECT_NE(message.find("snapshot"), std::string::npos) << message;
}

TEST(SnapshotFile, UnalignedOrOverlappingRegionsAreRefused) {
    auto file = sample();
    file.memory_layout[0].size = 0x1001;
    EXPECT_NE(decode_error(file.encode()).find("page-aligned"), std::string::npos);
    file = sample();
    file.memory_layout[1].start = GuestAddress(0x1000);
    EXPECT_NE(decode_error(file.encode()).find("overlaps"), std::string::npos);
    file = sample();
    file.memory_layout.clear();
    EXPECT_NE(decode_error(file.encode()).find("memory region count"), std::string::npos);
}

class AtomicWriteTest : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/kvmm-atomic-write-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        m_directory = pattern;
    }
    void TearDown() override { std::filesystem::remove_all(m_directory); }
    std::vector<std::string> names() const {
        std::vector<std::string> found;
        for (auto const& entry : std::filesystem::directory_iterator(m_directory))
            found.push_back(entry.path().filename());
        return found;
    }
    std::filesystem::path m_directory;
};

TEST_F(AtomicWriteTest, AFailedWriteLeavesNoFileAndKeepsTheOldOne) {
    auto const target = (m_directory / "vm.snap").string();
    std::ofstream(target) << "old";
    auto const failed = write_file_atomically(target, [](int fd) -> Expected<void> {
        EXPECT_EQ(::write(fd, "partial", 7), 7);
        return Error("disk full");
    });
    ASSERT_FALSE(failed);
    EXPECT_NE(failed.error().message().find("disk full"), std::string::npos);
    EXPECT_EQ(names(), std::vector<std::string> { "vm.snap" });
    std::ifstream in(target);
    std::string text;
    in >> text;
    EXPECT_EQ(text, "old");
}

TEST_F(AtomicWriteTest, ACompleteWriteReplacesTheTarget) {
    auto const target = (m_directory / "vm.snap").string();
    std::ofstream(target) << "old";
    ASSERT_TRUE(write_file_atomically(target, [](int fd) -> Expected<void> {
        EXPECT_EQ(::write(fd, "new", 3), 3);
        return {};
    }));
    EXPECT_EQ(names(), std::vector<std::string> { "vm.snap" });
    std::ifstream in(target);
    std::string text;
    in >> text;
    EXPECT_EQ(text, "new");
}

TEST_F(AtomicWriteTest, AMissingDirectoryIsNamed) {
    auto const failed = write_file_atomically((m_directory / "no-such-dir" / "vm.snap").string(),
                                              [](int) -> Expected<void> { return {}; });
    ASSERT_FALSE(failed);
    EXPECT_NE(failed.error().message().find("no-such-dir"), std::string::npos) << failed.error().message();
}

} // namespace
} // namespace kvmm

#include "devices/fw_cfg/table_loader.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace kvmm {
namespace {

uint32_t le32(std::vector<uint8_t> const& bytes, size_t offset) {
    uint32_t value = 0;
    std::memcpy(&value, bytes.data() + offset, sizeof(value));
    return value;
}

std::string name_at(std::vector<uint8_t> const& bytes, size_t offset) {
    return std::string(reinterpret_cast<char const*>(bytes.data() + offset));
}

TEST(TableLoaderTest, CommandsAre128ByteRecordsInQemusLayout) {
    TableLoader loader;
    MUST(loader.allocate("etc/acpi/rsdp", 36, 16, TableLoader::Zone::FSegment));
    MUST(loader.allocate("etc/acpi/tables", 400, 64, TableLoader::Zone::High));
    MUST(loader.add_pointer("etc/acpi/rsdp", "etc/acpi/tables", 24, 8));
    MUST(loader.add_checksum("etc/acpi/rsdp", 8, 0, 20));
    auto const& script = loader.script();
    ASSERT_EQ(script.size(), 4 * TableLoader::COMMAND_SIZE);

    // ALLOCATE: file, alignment, zone.
    EXPECT_EQ(le32(script, 0), TableLoader::COMMAND_ALLOCATE);
    EXPECT_EQ(name_at(script, 4), "etc/acpi/rsdp");
    EXPECT_EQ(le32(script, 60), 16u);
    EXPECT_EQ(script[64], 2);       // F segment
    EXPECT_EQ(script[128 + 64], 1); // high memory
    EXPECT_EQ(le32(script, 128 + 60), 64u);
    // ADD_POINTER: destination, source, offset, size.
    size_t const pointer = 2 * 128;
    EXPECT_EQ(le32(script, pointer), TableLoader::COMMAND_ADD_POINTER);
    EXPECT_EQ(name_at(script, pointer + 4), "etc/acpi/rsdp");
    EXPECT_EQ(name_at(script, pointer + 60), "etc/acpi/tables");
    EXPECT_EQ(le32(script, pointer + 116), 24u);
    EXPECT_EQ(script[pointer + 120], 8);
    // ADD_CHECKSUM: file, offset, start, length.
    size_t const checksum = 3 * 128;
    EXPECT_EQ(le32(script, checksum), TableLoader::COMMAND_ADD_CHECKSUM);
    EXPECT_EQ(name_at(script, checksum + 4), "etc/acpi/rsdp");
    EXPECT_EQ(le32(script, checksum + 60), 8u);
    EXPECT_EQ(le32(script, checksum + 64), 0u);
    EXPECT_EQ(le32(script, checksum + 68), 20u);
}

TEST(TableLoaderTest, RefusesCommandsOnFilesNotAllocated) {
    TableLoader loader;
    MUST(loader.allocate("a", 16, 16, TableLoader::Zone::High));
    auto const pointer = loader.add_pointer("a", "b", 0, 8);
    ASSERT_FALSE(pointer);
    EXPECT_NE(pointer.error().message().find("'b'"), std::string::npos) << pointer.error().message();
    EXPECT_FALSE(loader.add_checksum("c", 0, 0, 1));
    EXPECT_EQ(loader.script().size(), TableLoader::COMMAND_SIZE) << "a refused command adds nothing";
}

TEST(TableLoaderTest, RefusesRangesOutsideTheFile) {
    TableLoader loader;
    MUST(loader.allocate("a", 16, 16, TableLoader::Zone::High));
    EXPECT_FALSE(loader.add_pointer("a", "a", 12, 8));
    EXPECT_TRUE(loader.add_pointer("a", "a", 8, 8));
    EXPECT_FALSE(loader.add_pointer("a", "a", 0, 3));
    EXPECT_FALSE(loader.add_checksum("a", 16, 0, 16));
    EXPECT_FALSE(loader.add_checksum("a", 0, 8, 9));
    EXPECT_FALSE(loader.add_checksum("a", 0, 0xffffffffu, 2));
    EXPECT_TRUE(loader.add_checksum("a", 15, 0, 16));
}

TEST(TableLoaderTest, RefusesBadAllocations) {
    TableLoader loader;
    EXPECT_FALSE(loader.allocate("a", 16, 3, TableLoader::Zone::High));
    EXPECT_FALSE(loader.allocate("a", 0, 16, TableLoader::Zone::High));
    EXPECT_FALSE(loader.allocate(std::string(56, 'n'), 16, 16, TableLoader::Zone::High));
    MUST(loader.allocate("a", 16, 16, TableLoader::Zone::High));
    EXPECT_FALSE(loader.allocate("a", 16, 16, TableLoader::Zone::High));
}

} // namespace
} // namespace kvmm

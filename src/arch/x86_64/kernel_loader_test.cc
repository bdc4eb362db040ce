#include "arch/x86_64/kernel_loader.h"

#include "arch/x86_64/layout.h"
#include "arch/x86_64/testing/kernel_images.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace kvmm::x86_64 {
namespace {

using testing::Image;
using testing::make_bzimage;
using testing::make_pvh_elf;

class KernelLoaderTest : public ::testing::Test {
protected:
    template <typename T>
    T read(uint64_t address) {
        return MUST(m_memory.read_obj<T>(GuestAddress(address)));
    }
    Expected<BootInfo> load(Image const& kernel, std::string cmdline = "console=ttyS0",
                            std::vector<std::byte> const& initrd = {}) {
        return load_kernel(m_memory, BootConfig { kernel, initrd, std::move(cmdline), GuestAddress(0xe0000) });
    }
    std::string read_string(uint64_t address) {
        std::string text;
        for (char c; (c = static_cast<char>(read<uint8_t>(address))) != 0; ++address)
            text.push_back(c);
        return text;
    }
    GuestMemory m_memory = [] { return MUST(GuestMemory::create({ { GuestAddress(0), 64 * MiB } })); }();
};

TEST_F(KernelLoaderTest, BzImageFillsZeroPageAndLoadsKernelAtOneMib) {
    std::vector<std::byte> initrd(10000, std::byte { 0x5a });
    auto const boot = MUST(load(make_bzimage(), "console=ttyS0 quiet", initrd));
    EXPECT_EQ(boot.mode, EntryMode::Linux64);
    EXPECT_EQ(boot.entry.value(), 0x100200u);
    EXPECT_EQ(boot.boot_params.value(), ZERO_PAGE_ADDRESS);
    EXPECT_EQ(read<uint8_t>(0x100000), 0xe9);
    uint64_t const zero_page = ZERO_PAGE_ADDRESS;
    EXPECT_EQ(read<uint32_t>(zero_page + 0x202), 0x53726448u) << "setup header copied";
    EXPECT_EQ(read<uint8_t>(zero_page + 0x210), 0xff) << "type_of_loader";
    EXPECT_EQ(read<uint8_t>(zero_page + 0x211) & 0x81, 0x81) << "LOADED_HIGH | CAN_USE_HEAP";
    EXPECT_EQ(read_string(read<uint32_t>(zero_page + 0x228)), "console=ttyS0 quiet");
    EXPECT_EQ(read<uint64_t>(zero_page + 0x70), 0xe0000u) << "acpi_rsdp_addr";
    auto const initrd_address = read<uint32_t>(zero_page + 0x218);
    EXPECT_EQ(read<uint32_t>(zero_page + 0x21c), 10000u);
    EXPECT_EQ(initrd_address % 4096, 0u);
    EXPECT_GE(initrd_address, 0x500000u) << "above the kernel's init_size";
    EXPECT_LE(initrd_address + 10000u, 64 * MiB);
    EXPECT_EQ(read<uint8_t>(initrd_address + 9999), 0x5a);
    EXPECT_EQ(read<uint8_t>(zero_page + 0x1e8), 4u) << "e820 entries";
    EXPECT_EQ(read<uint64_t>(zero_page + 0x2d0 + 3 * 20), HIGH_MEMORY_START);
    EXPECT_EQ(read<uint32_t>(zero_page + 0x2d0 + 3 * 20 + 16), 1u);
}

TEST_F(KernelLoaderTest, BzImageCommandLineOverHeaderLimitIsRejected) {
    auto result = load(make_bzimage(), std::string(2048, 'x'));
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("2048"), std::string::npos) << result.error().message();
    EXPECT_TRUE(load(make_bzimage(), std::string(2047, 'x')).has_value());
}

TEST_F(KernelLoaderTest, InitrdThatDoesNotFitIsRejected) {
    std::vector<std::byte> initrd(62 * MiB);
    auto result = load(make_bzimage(), "", initrd);
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("does not fit"), std::string::npos) << result.error().message();
}

TEST_F(KernelLoaderTest, OldProtocolTruncatedAndGarbageImagesAreRejected) {
    auto old = load(make_bzimage(0x020a));
    ASSERT_FALSE(old.has_value());
    EXPECT_NE(old.error().message().find("2.10"), std::string::npos) << old.error().message();

    auto image = make_bzimage();
    image.resize(0x300);
    EXPECT_FALSE(load(image).has_value());
    image.resize(0x100);
    EXPECT_FALSE(load(image).has_value());
    EXPECT_FALSE(load(Image {}).has_value());

    Image garbage(4096);
    for (size_t i = 0; i < garbage.size(); ++i)
        garbage[i] = std::byte(static_cast<uint8_t>(i * 37 + 11));
    auto result = load(garbage);
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("neither"), std::string::npos);
}

TEST_F(KernelLoaderTest, EveryTruncationOfABzImageFailsCleanly) {
    auto const image = make_bzimage(0x020f, 512);
    for (size_t length = 0; length < image.size(); length += 7) {
        Image truncated(image.begin(), image.begin() + static_cast<ptrdiff_t>(length));
        (void)load(truncated); // must not crash; success is allowed once the payload starts
    }
}

TEST_F(KernelLoaderTest, PvhElfLoadsSegmentsAndWritesStartInfo) {
    MUST(m_memory.write_obj<uint8_t>(GuestAddress(0x200000 + 0x1fff), 0x77)); // must be zeroed
    std::vector<std::byte> initrd(5000, std::byte { 0x42 });
    auto const boot = MUST(load(make_pvh_elf(), "test=hello", initrd));
    EXPECT_EQ(boot.mode, EntryMode::Pvh32);
    EXPECT_EQ(boot.entry.value(), 0x200010u);
    EXPECT_EQ(read<uint8_t>(0x2000ff), 0xcc);
    EXPECT_EQ(read<uint8_t>(0x201fff), 0x00);
    uint64_t const info = boot.boot_params.value();
    EXPECT_EQ(read<uint32_t>(info), 0x336ec578u);
    EXPECT_EQ(read<uint32_t>(info + 4), 1u);
    EXPECT_EQ(read<uint32_t>(info + 12), 1u) << "one module: the initrd";
    EXPECT_EQ(read_string(read<uint64_t>(info + 24)), "test=hello");
    EXPECT_EQ(read<uint64_t>(info + 32), 0xe0000u);
    auto const module_list = read<uint64_t>(info + 16);
    auto const initrd_address = read<uint64_t>(module_list);
    EXPECT_EQ(read<uint64_t>(module_list + 8), 5000u);
    EXPECT_EQ(read<uint8_t>(initrd_address), 0x42);
    auto const map = read<uint64_t>(info + 40);
    EXPECT_EQ(read<uint32_t>(info + 48), 4u);
    EXPECT_EQ(read<uint32_t>(map + 16), 1u) << "first entry is RAM";
}

TEST_F(KernelLoaderTest, ElfWithoutPvhNoteIsRejectedWithAdvice) {
    auto result = load(make_pvh_elf(false));
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("PVH"), std::string::npos);
}

TEST_F(KernelLoaderTest, ElfSegmentsOutsideRamOrBelowOneMibAreRejected) {
    EXPECT_FALSE(load(make_pvh_elf(true, 0x1000)).has_value());
    EXPECT_FALSE(load(make_pvh_elf(true, 63 * MiB + 0x100000)).has_value());
    EXPECT_FALSE(load(make_pvh_elf(true, ~0ull - 0x100)).has_value());
}

TEST_F(KernelLoaderTest, EveryTruncationOfAnElfFailsCleanly) {
    auto const image = make_pvh_elf();
    // The last byte the loader needs is the end of the PT_LOAD data at 0x900.
    for (size_t length = 0; length < 0x900; length += 5) {
        Image truncated(image.begin(), image.begin() + static_cast<ptrdiff_t>(length));
        EXPECT_FALSE(load(truncated).has_value()) << length;
    }
}

} // namespace
} // namespace kvmm::x86_64

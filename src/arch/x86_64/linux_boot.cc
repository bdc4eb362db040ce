// The Linux x86 boot protocol (Documentation/arch/x86/boot.rst) for bzImage
// kernels, 64-bit entry: the protected-mode kernel goes to 1 MiB, a zero page
// (struct boot_params) carries the setup header, command line, initrd, E820
// map and RSDP, and the vCPU starts at load address + 0x200 in long mode.
#include "arch/x86_64/loader_common.h"

#include <array>

namespace kvmm::x86_64 {

namespace {

// Offsets in the bzImage and in struct boot_params (boot.rst "The Real-Mode
// Kernel Header" and arch/x86/include/uapi/asm/bootparam.h). The setup
// header sits at the same offset in both.
constexpr uint64_t SETUP_HEADER_START = 0x1f1;
constexpr uint64_t SETUP_SECTS = 0x1f1;
constexpr uint64_t VID_MODE = 0x1fa;
constexpr uint64_t JUMP_LENGTH = 0x201; // setup header ends at 0x202 + this byte
constexpr uint64_t PROTOCOL_VERSION = 0x206;
constexpr uint64_t TYPE_OF_LOADER = 0x210;
constexpr uint64_t LOADFLAGS = 0x211;
constexpr uint64_t RAMDISK_IMAGE = 0x218;
constexpr uint64_t RAMDISK_SIZE = 0x21c;
constexpr uint64_t HEAP_END_PTR = 0x224;
constexpr uint64_t CMD_LINE_PTR = 0x228;
constexpr uint64_t INITRD_ADDR_MAX = 0x22c;
constexpr uint64_t CMDLINE_SIZE = 0x238;
constexpr uint64_t XLOADFLAGS = 0x236;
constexpr uint64_t INIT_SIZE = 0x260;
constexpr uint64_t ACPI_RSDP_ADDR = 0x070;
constexpr uint64_t EXT_RAMDISK_IMAGE = 0x0c0;
constexpr uint64_t EXT_RAMDISK_SIZE = 0x0c4;
constexpr uint64_t E820_ENTRIES = 0x1e8;
constexpr uint64_t E820_TABLE = 0x2d0;
constexpr size_t E820_MAX_ENTRIES = 128;
constexpr size_t ZERO_PAGE_SIZE = 4096;

constexpr uint16_t MIN_PROTOCOL = 0x020c; // 2.12: xloadflags, 64-bit entry
constexpr uint8_t LOADED_HIGH = 0x01;
constexpr uint8_t CAN_USE_HEAP = 0x80;
constexpr uint16_t XLF_KERNEL_64 = 0x01;
constexpr uint64_t KERNEL_LOAD_ADDRESS = HIGH_MEMORY_START;
constexpr uint64_t ENTRY_64_OFFSET = 0x200;

template <typename T>
void put(std::array<std::byte, ZERO_PAGE_SIZE>& page, uint64_t offset, T value) {
    std::memcpy(page.data() + offset, &value, sizeof(T));
}

template <typename T>
T get(std::array<std::byte, ZERO_PAGE_SIZE> const& page, uint64_t offset) {
    T value {};
    std::memcpy(&value, page.data() + offset, sizeof(T));
    return value;
}

} // namespace

Expected<BootInfo> load_bzimage(GuestMemory const& memory, BootConfig const& config) {
    auto const image = config.kernel;
    auto const version = read_le<uint16_t>(image, PROTOCOL_VERSION);
    auto const jump_length = read_le<uint8_t>(image, JUMP_LENGTH);
    if (!version || !jump_length || image.size() < 0x268)
        return Error::format("bzImage truncated: {} bytes, too short for the setup header", image.size());
    if (*version < MIN_PROTOCOL)
        return Error::format("bzImage uses boot protocol {}.{:02}, kvmm needs 2.12 or later", *version >> 8,
                             *version & 0xff);
    if ((*read_le<uint16_t>(image, XLOADFLAGS) & XLF_KERNEL_64) == 0)
        return Error("bzImage has no 64-bit entry point (XLF_KERNEL_64 clear in xloadflags)");
    if ((*read_le<uint8_t>(image, LOADFLAGS) & LOADED_HIGH) == 0)
        return Error("bzImage is a zImage that must load at 0x10000 (LOADED_HIGH clear): not supported");

    uint64_t setup_sectors = *read_le<uint8_t>(image, SETUP_SECTS);
    if (setup_sectors == 0)
        setup_sectors = 4; // boot.rst: "if this field is 0, the real value is 4"
    uint64_t const setup_size = (setup_sectors + 1) * 512;
    if (setup_size >= image.size())
        return Error::format("bzImage truncated: setup code of {} bytes but the file has only {} bytes", setup_size,
                             image.size());
    auto const kernel = image.subspan(setup_size);
    // The kernel decompresses in place and needs init_size bytes from its load address.
    uint64_t const init_size = std::max<uint64_t>(*read_le<uint32_t>(image, INIT_SIZE), kernel.size());
    uint64_t const kernel_end = KERNEL_LOAD_ADDRESS + init_size;
    if (kernel_end > low_memory_end(memory))
        return Error::format("kernel needs {} MiB from 1 MiB up (init_size), more than the guest's {} MiB of low "
                             "RAM",
                             (init_size + MiB - 1) / MiB, low_memory_end(memory) / MiB);
    TRY(memory.write(GuestAddress(KERNEL_LOAD_ADDRESS), kernel));

    std::array<std::byte, ZERO_PAGE_SIZE> zero_page {};
    uint64_t const header_end = std::min<uint64_t>(0x202 + *jump_length, ZERO_PAGE_SIZE);
    std::memcpy(zero_page.data() + SETUP_HEADER_START, image.data() + SETUP_HEADER_START,
                header_end - SETUP_HEADER_START);
    put<uint16_t>(zero_page, VID_MODE, 0xffff);    // "normal" text mode
    put<uint8_t>(zero_page, TYPE_OF_LOADER, 0xff); // undefined boot loader ID
    put<uint8_t>(zero_page, LOADFLAGS, static_cast<uint8_t>(get<uint8_t>(zero_page, LOADFLAGS) | CAN_USE_HEAP));
    put<uint16_t>(zero_page, HEAP_END_PTR, 0xfe00);

    // cmdline_size excludes the NUL (boot.rst, field cmdline_size, protocol 2.06+).
    uint64_t const cmdline_limit =
        std::min<uint64_t>(uint64_t(get<uint32_t>(zero_page, CMDLINE_SIZE)) + 1, CMDLINE_MAX_SIZE);
    auto const cmdline = TRY(write_cmdline(memory, config.cmdline, cmdline_limit));
    put<uint32_t>(zero_page, CMD_LINE_PTR, static_cast<uint32_t>(cmdline.value()));

    if (!config.initrd.empty()) {
        uint64_t const initrd_max = get<uint32_t>(zero_page, INITRD_ADDR_MAX);
        auto const address = TRY(place_initrd(memory, config.initrd, align_up_page(kernel_end), initrd_max));
        put<uint32_t>(zero_page, RAMDISK_IMAGE, static_cast<uint32_t>(address.value()));
        put<uint32_t>(zero_page, RAMDISK_SIZE, static_cast<uint32_t>(config.initrd.size()));
        put<uint32_t>(zero_page, EXT_RAMDISK_IMAGE, static_cast<uint32_t>(address.value() >> 32));
        put<uint32_t>(zero_page, EXT_RAMDISK_SIZE, static_cast<uint32_t>(uint64_t(config.initrd.size()) >> 32));
    }

    put<uint64_t>(zero_page, ACPI_RSDP_ADDR, config.rsdp.value());
    auto const map = memory_map(memory);
    if (map.size() > E820_MAX_ENTRIES)
        return Error::format("memory map of {} entries does not fit the zero page", map.size());
    for (size_t i = 0; i < map.size(); ++i) {
        uint64_t const offset = E820_TABLE + i * 20; // struct boot_e820_entry is packed, 20 bytes
        put<uint64_t>(zero_page, offset, map[i].address);
        put<uint64_t>(zero_page, offset + 8, map[i].size);
        put<uint32_t>(zero_page, offset + 16, static_cast<uint32_t>(map[i].type));
    }
    put<uint8_t>(zero_page, E820_ENTRIES, static_cast<uint8_t>(map.size()));
    TRY(memory.write(GuestAddress(ZERO_PAGE_ADDRESS), zero_page));
    return BootInfo { EntryMode::Linux64, GuestAddress(KERNEL_LOAD_ADDRESS + ENTRY_64_OFFSET),
                      GuestAddress(ZERO_PAGE_ADDRESS) };
}

} // namespace kvmm::x86_64

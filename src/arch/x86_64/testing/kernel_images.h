// Tiny kernel images for tests of the loaders and of whole machines: a bzImage and a PVH ELF
// with just the fields the loaders read (Linux boot protocol, boot.rst; the Xen PVH note).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace kvmm::x86_64::testing {

using Image = std::vector<std::byte>;

template <typename T>
inline void put(Image& image, size_t offset, T value) {
    if (image.size() < offset + sizeof(T))
        image.resize(offset + sizeof(T));
    std::memcpy(image.data() + offset, &value, sizeof(T));
}

// A bzImage with 2 setup sectors and `payload` bytes of protected-mode kernel.
inline Image make_bzimage(uint16_t version = 0x020f, size_t payload = 8192) {
    Image image(3 * 512 + payload, std::byte { 0 });
    put<uint8_t>(image, 0x1f1, 2);           // setup_sects
    put<uint8_t>(image, 0x201, 0x66);        // jump: header runs to 0x268
    put<uint32_t>(image, 0x202, 0x53726448); // "HdrS"
    put<uint16_t>(image, 0x206, version);
    put<uint8_t>(image, 0x211, 0x01);        // LOADED_HIGH
    put<uint32_t>(image, 0x22c, 0x7fffffff); // initrd_addr_max
    put<uint32_t>(image, 0x230, 0x200000);   // kernel_alignment
    put<uint8_t>(image, 0x234, 1);           // relocatable
    put<uint16_t>(image, 0x236, 0x0003);     // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    put<uint32_t>(image, 0x238, 2047);       // cmdline_size
    put<uint32_t>(image, 0x260, 0x400000);   // init_size: 4 MiB
    image[3 * 512] = std::byte { 0xe9 };     // first byte of the 32-bit kernel, to find it again
    return image;
}

// An ELF64 with one PT_LOAD segment at 2 MiB and a PT_NOTE carrying the PVH entry.
inline Image make_pvh_elf(bool with_note = true, uint64_t physical = 0x200000) {
    Image image(0x1000, std::byte { 0 });
    std::memcpy(image.data(),
                "\x7f"
                "ELF",
                4);
    put<uint8_t>(image, 4, 2);   // ELFCLASS64
    put<uint8_t>(image, 5, 1);   // little-endian
    put<uint16_t>(image, 16, 2); // ET_EXEC
    put<uint16_t>(image, 18, 62);
    put<uint64_t>(image, 32, 64); // e_phoff
    put<uint16_t>(image, 54, 56);
    put<uint16_t>(image, 56, 2);
    // PT_LOAD: 0x100 bytes of file at 0x800, 0x2000 bytes in memory.
    put<uint32_t>(image, 64, 1);
    put<uint64_t>(image, 64 + 8, 0x800);
    put<uint64_t>(image, 64 + 24, physical);
    put<uint64_t>(image, 64 + 32, 0x100);
    put<uint64_t>(image, 64 + 40, 0x2000);
    // PT_NOTE at 0x400.
    put<uint32_t>(image, 120, 4);
    put<uint64_t>(image, 120 + 8, 0x400);
    put<uint64_t>(image, 120 + 32, 20);
    put<uint32_t>(image, 0x400, 4);
    put<uint32_t>(image, 0x404, 4);
    put<uint32_t>(image, 0x408, with_note ? 18 : 17);
    std::memcpy(image.data() + 0x40c, "Xen", 4);
    put<uint32_t>(image, 0x410, static_cast<uint32_t>(physical + 0x10));
    for (size_t i = 0; i < 0x100; ++i)
        image[0x800 + i] = std::byte { 0xcc };
    return image;
}

} // namespace kvmm::x86_64::testing

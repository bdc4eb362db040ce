#include "arch/x86_64/kernel_loader.h"

#include "arch/x86_64/loader_common.h"

namespace kvmm::x86_64 {

Expected<GuestAddress> write_cmdline(GuestMemory const& memory, std::string const& cmdline, uint64_t limit) {
    if (cmdline.size() + 1 > limit)
        return Error::format("command line of {} bytes is longer than this kernel's limit of {} bytes", cmdline.size(),
                             limit - 1);
    GuestAddress const address(CMDLINE_ADDRESS);
    TRY(memory.write(address, std::as_bytes(std::span(cmdline.data(), cmdline.size() + 1))));
    return address;
}

Expected<GuestAddress> place_initrd(GuestMemory const& memory, std::span<std::byte const> initrd,
                                    uint64_t lowest_address, uint64_t highest_address) {
    uint64_t const top = std::min(highest_address + 1, low_memory_end(memory)); // exclusive
    uint64_t const size = initrd.size();
    if (size > top || align_down(top - size, 4096) < lowest_address)
        return Error::format("initrd of {} bytes does not fit in guest memory between {:#x} and {:#x}: give the VM "
                             "more memory",
                             size, lowest_address, top);
    GuestAddress const address(align_down(top - size, 4096));
    TRY(memory.write(address, initrd));
    return address;
}

Expected<BootInfo> load_kernel(GuestMemory const& memory, BootConfig const& config) {
    auto const image = config.kernel;
    if (image.size() < 4)
        return Error::format("the kernel image is only {} bytes long", image.size());
    static constexpr std::byte ELF_MAGIC[] = { std::byte { 0x7f }, std::byte { 'E' }, std::byte { 'L' },
                                               std::byte { 'F' } };
    if (std::memcmp(image.data(), ELF_MAGIC, 4) == 0)
        return load_pvh_elf(memory, config);
    auto const header_magic = read_le<uint32_t>(image, 0x202);
    if (header_magic && *header_magic == 0x53726448) // "HdrS"
        return load_bzimage(memory, config);
    return Error("the kernel is neither an ELF image with a PVH entry note nor a bzImage (no ELF magic, no "
                 "'HdrS' boot protocol signature at offset 0x202)");
}

} // namespace kvmm::x86_64

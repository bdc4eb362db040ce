// PVH boot: an ELF64 kernel with a XEN_ELFNOTE_PHYS32_ENTRY note. Its PT_LOAD
// segments go to their physical addresses, and a struct hvm_start_info
// (xen/include/public/arch-x86/hvm/start_info.h, version 1) describes the
// command line, the initrd (module 0), the RSDP and the memory map.
#include "arch/x86_64/loader_common.h"

namespace kvmm::x86_64 {

namespace {

constexpr uint32_t PVH_START_MAGIC = 0x336ec578;
constexpr uint32_t XEN_ELFNOTE_PHYS32_ENTRY = 18;
constexpr uint32_t PT_LOAD = 1;
constexpr uint32_t PT_NOTE = 4;
constexpr uint16_t EM_X86_64 = 62;
constexpr size_t MAX_PROGRAM_HEADERS = 256;

struct [[gnu::packed]] StartInfo {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};
static_assert(sizeof(StartInfo) == 56);

struct [[gnu::packed]] ModuleEntry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};
static_assert(sizeof(ModuleEntry) == 32);

struct [[gnu::packed]] MemoryMapEntry {
    uint64_t address;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};
static_assert(sizeof(MemoryMapEntry) == 24);

struct ProgramHeader {
    uint32_t type;
    uint64_t offset;
    uint64_t physical_address;
    uint64_t file_size;
    uint64_t memory_size;
};

Expected<ProgramHeader> read_program_header(std::span<std::byte const> image, uint64_t offset) {
    auto type = read_le<uint32_t>(image, offset);
    auto file_offset = read_le<uint64_t>(image, offset + 8);
    auto physical = read_le<uint64_t>(image, offset + 24);
    auto file_size = read_le<uint64_t>(image, offset + 32);
    auto memory_size = read_le<uint64_t>(image, offset + 40);
    if (!type || !file_offset || !physical || !file_size || !memory_size)
        return Error::format("ELF program header at offset {:#x} lies beyond the end of the {}-byte image", offset,
                             image.size());
    return ProgramHeader { *type, *file_offset, *physical, *file_size, *memory_size };
}

// Walks the notes of one PT_NOTE segment (ELF gABI "Note Section") for the PVH entry.
std::optional<uint32_t> find_pvh_entry(std::span<std::byte const> notes) {
    uint64_t position = 0;
    while (position + 12 <= notes.size()) {
        auto const name_size = *read_le<uint32_t>(notes, position);
        auto const descriptor_size = *read_le<uint32_t>(notes, position + 4);
        auto const type = *read_le<uint32_t>(notes, position + 8);
        uint64_t const name_offset = position + 12;
        uint64_t const descriptor_offset = name_offset + ((uint64_t(name_size) + 3) & ~3ull);
        uint64_t const next = descriptor_offset + ((uint64_t(descriptor_size) + 3) & ~3ull);
        if (next > notes.size())
            return std::nullopt;
        bool const is_xen = name_size == 4 && std::memcmp(notes.data() + name_offset, "Xen", 4) == 0;
        if (is_xen && type == XEN_ELFNOTE_PHYS32_ENTRY && descriptor_size >= 4)
            return read_le<uint32_t>(notes, descriptor_offset);
        position = next;
    }
    return std::nullopt;
}

} // namespace

Expected<BootInfo> load_pvh_elf(GuestMemory const& memory, BootConfig const& config) {
    auto const image = config.kernel;
    if (image.size() < 64)
        return Error::format("ELF kernel truncated: {} bytes, shorter than an ELF64 header", image.size());
    if (static_cast<uint8_t>(image[4]) != 2 || static_cast<uint8_t>(image[5]) != 1)
        return Error("ELF kernel is not a 64-bit little-endian image (EI_CLASS/EI_DATA)");
    auto const machine = *read_le<uint16_t>(image, 18);
    if (machine != EM_X86_64)
        return Error::format("ELF kernel is for machine {} , not x86-64 ({})", machine, EM_X86_64);
    auto const header_offset = *read_le<uint64_t>(image, 32);
    auto const header_size = *read_le<uint16_t>(image, 54);
    auto const header_count = *read_le<uint16_t>(image, 56);
    if (header_size != 56 || header_count == 0 || header_count > MAX_PROGRAM_HEADERS)
        return Error::format("ELF kernel has unusable program headers (size {}, count {})", header_size, header_count);

    std::vector<ProgramHeader> headers;
    std::optional<uint32_t> entry;
    for (uint16_t i = 0; i < header_count; ++i) {
        auto const header = TRY(read_program_header(image, header_offset + uint64_t(i) * header_size));
        auto const file_end = checked_add(header.offset, header.file_size);
        if (header.type != PT_LOAD && header.type != PT_NOTE)
            continue;
        if (!file_end || *file_end > image.size())
            return Error::format("ELF segment {} (offset {:#x}, size {:#x}) extends past the end of the {}-byte "
                                 "image: the file is truncated",
                                 i, header.offset, header.file_size, image.size());
        if (header.type == PT_NOTE) {
            if (!entry)
                entry = find_pvh_entry(image.subspan(header.offset, header.file_size));
            continue;
        }
        headers.push_back(header);
    }
    if (!entry)
        return Error("ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): build it with CONFIG_PVH=y, or "
                     "boot its bzImage instead");
    if (headers.empty())
        return Error("ELF kernel has no loadable (PT_LOAD) segment");

    uint64_t kernel_end = 0;
    for (auto const& header : headers) {
        auto const end = checked_add(header.physical_address, header.memory_size);
        if (header.file_size > header.memory_size || !end || header.physical_address < HIGH_MEMORY_START ||
            !memory.contains_range(GuestAddress(header.physical_address), header.memory_size))
            return Error::format("ELF segment at physical {:#x} (file size {:#x}, memory size {:#x}) does not fit "
                                 "in guest RAM above 1 MiB",
                                 header.physical_address, header.file_size, header.memory_size);
        TRY(memory.write(GuestAddress(header.physical_address), image.subspan(header.offset, header.file_size)));
        TRY(memory.fill_zero(GuestAddress(header.physical_address + header.file_size),
                             header.memory_size - header.file_size));
        kernel_end = std::max(kernel_end, *end);
    }
    if (*entry < HIGH_MEMORY_START || !memory.contains_range(GuestAddress(*entry), 1))
        return Error::format("PVH entry point {:#x} is not in the kernel's memory", *entry);

    StartInfo start_info {};
    start_info.magic = PVH_START_MAGIC;
    start_info.version = 1;
    start_info.cmdline_paddr = TRY(write_cmdline(memory, config.cmdline, CMDLINE_MAX_SIZE)).value();
    start_info.rsdp_paddr = config.rsdp.value();
    if (!config.initrd.empty()) {
        auto const initrd_address =
            TRY(place_initrd(memory, config.initrd, align_up_page(kernel_end), low_memory_end(memory) - 1));
        ModuleEntry module { initrd_address.value(), config.initrd.size(), 0, 0 };
        TRY(memory.write_obj(GuestAddress(PVH_MODULE_LIST_ADDRESS), module));
        start_info.nr_modules = 1;
        start_info.modlist_paddr = PVH_MODULE_LIST_ADDRESS;
    }
    auto const map = memory_map(memory);
    if (map.size() > PVH_MEMORY_MAP_MAX_ENTRIES)
        return Error::format("memory map of {} entries does not fit the PVH table", map.size());
    for (size_t i = 0; i < map.size(); ++i) {
        MemoryMapEntry entry_record { map[i].address, map[i].size, static_cast<uint32_t>(map[i].type), 0 };
        TRY(memory.write_obj(GuestAddress(PVH_MEMORY_MAP_ADDRESS + i * sizeof(MemoryMapEntry)), entry_record));
    }
    start_info.memmap_paddr = PVH_MEMORY_MAP_ADDRESS;
    start_info.memmap_entries = static_cast<uint32_t>(map.size());
    TRY(memory.write_obj(GuestAddress(PVH_START_INFO_ADDRESS), start_info));
    return BootInfo { EntryMode::Pvh32, GuestAddress(*entry), GuestAddress(PVH_START_INFO_ADDRESS) };
}

} // namespace kvmm::x86_64

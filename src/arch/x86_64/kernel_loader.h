// Kernel loading: recognises the kernel image format and puts kernel, initrd,
// command line and the boot information structure into guest memory.
//
// Formats:
//  * ELF64 x86-64 with a XEN_ELFNOTE_PHYS32_ENTRY note: the PVH boot ABI
//    (Xen docs/misc/pvh.pandoc; struct hvm_start_info, version 1). Entered in
//    32-bit protected mode with EBX = start_info. Linux vmlinux has the note.
//  * bzImage: the Linux x86 boot protocol 2.12+ (Documentation/arch/x86/boot.rst),
//    entered at its 64-bit entry point with RSI = zero page.
// Images are untrusted input: every offset and size is bounds-checked, and a
// bad image gets an error naming what is wrong and the values involved.
#pragma once

#include "base/expected.h"
#include "memory/guest_memory.h"

#include <cstddef>
#include <span>
#include <string>

namespace kvmm::x86_64 {

enum class EntryMode { Pvh32, Linux64 };

struct BootConfig {
    std::span<std::byte const> kernel; // the whole kernel file
    std::span<std::byte const> initrd; // may be empty
    std::string cmdline;
    GuestAddress rsdp; // where the ACPI RSDP lives, handed to the guest
};

struct BootInfo {
    EntryMode mode;
    GuestAddress entry;       // first instruction
    GuestAddress boot_params; // PVH: hvm_start_info (EBX); Linux64: zero page (RSI)
};

Expected<BootInfo> load_kernel(GuestMemory const& memory, BootConfig const& config);

} // namespace kvmm::x86_64

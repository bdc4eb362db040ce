// libFuzzer target: kernel images are untrusted host files. Any input must be rejected with an
// Error or loaded, never crash, hang or write outside guest RAM (ASan watches the mappings).
#include "arch/x86_64/kernel_loader.h"
#include "arch/x86_64/layout.h"

#include <cstddef>
#include <cstdint>

namespace {

kvmm::GuestMemory& guest_memory() {
    // 32 MiB of anonymous, lazily-backed memory, reused across inputs.
    static kvmm::GuestMemory memory = MUST(kvmm::GuestMemory::create({ { kvmm::GuestAddress(0), 32ull << 20 } }));
    return memory;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    // The first byte picks an initrd size, so initrd placement is explored as well.
    size_t const initrd_size = size > 0 ? size_t(data[0]) << 12 : 0;
    static std::vector<std::byte> initrd(255 << 12, std::byte { 0x5a });
    kvmm::x86_64::BootConfig config {
        std::span(reinterpret_cast<std::byte const*>(data), size),
        std::span<std::byte const>(initrd.data(), initrd_size),
        "console=ttyS0",
        kvmm::GuestAddress(kvmm::x86_64::ACPI_TABLES_START),
    };
    (void)kvmm::x86_64::load_kernel(guest_memory(), config);
    return 0;
}

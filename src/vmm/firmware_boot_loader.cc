#include "vmm/firmware_boot_loader.h"

#include "arch/x86_64/layout.h"
#include "base/file.h"

#include <spdlog/spdlog.h>

#include <cstring>

namespace kvmm {

static_assert(FirmwareBootLoader::MAX_IMAGE_SIZE == x86_64::FIRMWARE_WINDOW_END - x86_64::FIRMWARE_WINDOW_START);

Expected<std::unique_ptr<FirmwareBootLoader>> FirmwareBootLoader::create(std::string path) {
    auto const bytes = TRY(read_file(path, MAX_IMAGE_SIZE).with_context(fmt::format("firmware '{}'", path)));
    if (bytes.empty())
        return Error::format("firmware '{}' is empty", path);
    if (bytes.size() % IMAGE_ALIGNMENT != 0)
        return Error::format("firmware '{}' is {} bytes, not a multiple of 4 KiB", path, bytes.size());
    auto image = TRY(MemoryMapping::create_anonymous(bytes.size(), MemoryMapping::HugePages::No));
    std::memcpy(image.data(), bytes.data(), bytes.size());
    return std::unique_ptr<FirmwareBootLoader>(new FirmwareBootLoader(std::move(path), std::move(image)));
}

uint64_t FirmwareBootLoader::image_start() const { return x86_64::FIRMWARE_WINDOW_END - m_image.size(); }

Expected<void> FirmwareBootLoader::map(Vm& vm) {
    return vm.map_read_only(image_start(), std::span<std::byte const>(m_image.data(), m_image.size()))
        .with_context(fmt::format("firmware '{}'", m_path));
}

Expected<void> FirmwareBootLoader::load(GuestMemory const& memory, GuestAddress) {
    if (m_loaded)
        return Error::format("firmware '{}' is already loaded", m_path);
    // An image smaller than 128 KiB fills the top of the legacy area, as QEMU places it.
    uint64_t const legacy_size = std::min(m_image.size(), x86_64::LEGACY_BIOS_SIZE);
    auto const legacy_start = x86_64::LEGACY_BIOS_START + x86_64::LEGACY_BIOS_SIZE - legacy_size;
    auto const legacy = std::span<std::byte const>(m_image.data() + m_image.size() - legacy_size, legacy_size);
    TRY(memory.write(GuestAddress(legacy_start), legacy)
            .with_context(fmt::format("copying firmware '{}' below 1 MiB", m_path)));
    m_loaded = true;
    spdlog::debug("firmware '{}' ({} KiB) at {:#x}, legacy copy at {:#x}", m_path, m_image.size() / 1024, image_start(),
                  legacy_start);
    return {};
}

Expected<x86_64::InitialCpuState> FirmwareBootLoader::boot_cpu_state(X86SpecialRegisters const& current) const {
    if (!m_loaded)
        return Error::format("firmware '{}' is not loaded yet", m_path);
    // EDX at reset holds the processor signature; firmware rarely reads it, 0x600 (family 6)
    // is what QEMU's default CPU models give.
    return x86_64::reset_cpu_state(current, 0x600);
}

} // namespace kvmm

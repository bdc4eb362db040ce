#include "vmm/boot_loader.h"

#include "base/file.h"

#include <spdlog/spdlog.h>

namespace kvmm {

Expected<std::unique_ptr<LinuxBootLoader>> LinuxBootLoader::create(std::string kernel_path,
                                                                   std::optional<std::string> const& initrd_path,
                                                                   std::string cmdline, uint64_t max_size) {
    auto kernel = TRY(read_file(kernel_path, max_size).with_context("kernel"));
    std::vector<std::byte> initrd;
    if (initrd_path)
        initrd = TRY(read_file(*initrd_path, max_size).with_context("initrd"));
    return std::unique_ptr<LinuxBootLoader>(
        new LinuxBootLoader(std::move(kernel_path), std::move(kernel), std::move(initrd), std::move(cmdline)));
}

Expected<void> LinuxBootLoader::load(GuestMemory const& memory, GuestAddress rsdp) {
    if (m_boot_info)
        return Error::format("kernel '{}' is already loaded", m_kernel_path);
    x86_64::BootConfig const boot { m_kernel, m_initrd, m_cmdline, rsdp };
    m_boot_info = TRY(x86_64::load_kernel(memory, boot).with_context(fmt::format("kernel '{}'", m_kernel_path)));
    TRY(x86_64::write_boot_tables(memory));
    spdlog::debug("kernel '{}' loaded: {} entry at {:#x}", m_kernel_path,
                  m_boot_info->mode == x86_64::EntryMode::Pvh32 ? "PVH" : "Linux 64-bit", m_boot_info->entry.value());
    // The files' bytes are in guest memory now; the host copy is not needed again.
    m_kernel = {};
    m_initrd = {};
    return {};
}

Expected<x86_64::InitialCpuState> LinuxBootLoader::boot_cpu_state(X86SpecialRegisters const& current) const {
    if (!m_boot_info)
        return Error::format("kernel '{}' is not loaded yet", m_kernel_path);
    return x86_64::boot_cpu_state(*m_boot_info, current);
}

} // namespace kvmm

// VmConfig: everything needed to build and run one VM, filled from the command
// line (and later the API/config file), validated before anything is built so
// that bad input fails fast with a message that names the field and the value.
#pragma once

#include "base/expected.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kvmm {

struct ConsoleConfig {
    enum class Kind { Stdio, File, None } kind { Kind::Stdio };
    std::string path; // for Kind::File

    // Parses "stdio", "none" or "file=PATH".
    static Expected<ConsoleConfig> parse(std::string_view text);
};

struct VmConfig {
    std::string kernel_path;
    std::optional<std::string> initrd_path;
    std::string cmdline;
    uint32_t vcpu_count { 1 };
    uint64_t memory_size { 128ull << 20 };
    ConsoleConfig console;
    bool transparent_huge_pages { false };
};

// Parses sizes such as "128M", "1G", "512k", "1.5G" is not accepted; a bare number is MiB
// (as QEMU's -m and Firecracker's mem_size_mib). Suffixes K, M, G, T (powers of 1024, case-insensitive,
// optional trailing "iB"/"B"). Errors name the text.
Expected<uint64_t> parse_memory_size(std::string_view text);

// Largest command line we accept from the user; the kernel image may impose a smaller limit
// (bzImage cmdline_size), which the loader checks.
inline constexpr size_t MAX_CMDLINE_LENGTH = 64 * 1024 - 1;

// Checks ranges that do not need the hypervisor: vCPU count >= 1, memory size within the
// architecture's limits, command line length, paths non-empty. `max_vcpus` comes from the hypervisor.
Expected<void> validate(VmConfig const& config, uint32_t max_vcpus);

} // namespace kvmm

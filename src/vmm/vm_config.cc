#include "vmm/vm_config.h"

#include "arch/x86_64/layout.h"
#include "base/checked_math.h"

#include <cctype>
#include <charconv>

namespace kvmm {

Expected<ConsoleConfig> ConsoleConfig::parse(std::string_view text) {
    if (text == "stdio")
        return ConsoleConfig { Kind::Stdio, {} };
    if (text == "none")
        return ConsoleConfig { Kind::None, {} };
    constexpr std::string_view file_prefix = "file=";
    if (text.starts_with(file_prefix)) {
        auto path = text.substr(file_prefix.size());
        if (path.empty())
            return Error("--console file= needs a path, e.g. --console file=/tmp/console.log");
        return ConsoleConfig { Kind::File, std::string(path) };
    }
    return Error::format("invalid --console '{}': expected stdio, none or file=PATH", text);
}

Expected<uint64_t> parse_memory_size(std::string_view text) {
    uint64_t number = 0;
    auto const* const begin = text.data();
    auto const* const end = text.data() + text.size();
    auto [rest, error] = std::from_chars(begin, end, number);
    if (error == std::errc::result_out_of_range)
        return Error::format("memory size '{}' is too large", text);
    if (error != std::errc() || rest == begin)
        return Error::format("invalid memory size '{}': expected a number with an optional K, M, G or T suffix", text);
    std::string suffix(rest, end);
    for (auto& character : suffix)
        character = static_cast<char>(std::toupper(static_cast<unsigned char>(character)));
    if (suffix.ends_with("IB"))
        suffix.resize(suffix.size() - 2);
    else if (suffix.size() > 1 && suffix.ends_with("B"))
        suffix.resize(suffix.size() - 1);
    uint64_t multiplier = 0;
    if (suffix.empty() || suffix == "M")
        multiplier = 1ull << 20;
    else if (suffix == "K")
        multiplier = 1ull << 10;
    else if (suffix == "G")
        multiplier = 1ull << 30;
    else if (suffix == "T")
        multiplier = 1ull << 40;
    else if (suffix == "B")
        multiplier = 1;
    else
        return Error::format("invalid memory size '{}': unknown suffix '{}' (use K, M, G or T)", text,
                             std::string_view(rest, static_cast<size_t>(end - rest)));
    auto const bytes = checked_mul(number, multiplier);
    if (!bytes)
        return Error::format("memory size '{}' is too large", text);
    return *bytes;
}

Expected<void> validate(VmConfig const& config, uint32_t max_vcpus) {
    if (config.kernel_path.empty())
        return Error("no kernel given: use --kernel PATH");
    if (config.vcpu_count == 0)
        return Error("the VM needs at least 1 vCPU, got 0");
    if (config.vcpu_count > max_vcpus)
        return Error::format("{} vCPUs requested, but this host's KVM allows at most {}", config.vcpu_count, max_vcpus);
    if (config.cmdline.size() > MAX_CMDLINE_LENGTH)
        return Error::format("kernel command line is {} bytes, longer than the limit of {} bytes",
                             config.cmdline.size(), MAX_CMDLINE_LENGTH);
    // The architecture's memory layout owns the size rules (range, alignment) and their messages.
    TRY(x86_64::ram_regions(config.memory_size));
    return {};
}

} // namespace kvmm

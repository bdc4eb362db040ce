#include "config/vm_config.h"

#include "base/checked_math.h"
#include "base/path.h"
#include "config/mac_address.h"

#include <cctype>
#include <charconv>
#include <set>

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
        TRY(check_path_characters(path, "--console file="));
        return ConsoleConfig { Kind::File, std::string(path) };
    }
    constexpr std::string_view socket_prefix = "socket=";
    if (text.starts_with(socket_prefix)) {
        auto path = text.substr(socket_prefix.size());
        if (path.empty())
            return Error("--console socket= needs a path, e.g. --console socket=/run/kvmm/vm0.console");
        TRY(check_path_characters(path, "--console socket="));
        return ConsoleConfig { Kind::Socket, std::string(path) };
    }
    return Error::format("invalid --console '{}': expected stdio, none, file=PATH or socket=PATH", text);
}

Expected<uint64_t> parse_size_with_suffix(std::string_view text, std::string_view what, uint64_t bare_unit) {
    uint64_t number = 0;
    auto const* const begin = text.data();
    auto const* const end = text.data() + text.size();
    auto [rest, error] = std::from_chars(begin, end, number);
    if (error == std::errc::result_out_of_range)
        return Error::format("{} size '{}' is too large", what, text);
    if (error != std::errc() || rest == begin)
        return Error::format("invalid {} size '{}': expected a number{} with an optional K, M, G or T suffix", what,
                             text, bare_unit == 1 ? " of bytes" : "");
    std::string suffix(rest, end);
    for (auto& character : suffix)
        character = static_cast<char>(std::toupper(static_cast<unsigned char>(character)));
    if (suffix.ends_with("IB"))
        suffix.resize(suffix.size() - 2);
    else if (suffix.size() > 1 && suffix.ends_with("B"))
        suffix.resize(suffix.size() - 1);
    uint64_t multiplier = 0;
    if (suffix.empty())
        multiplier = bare_unit;
    else if (suffix == "B")
        multiplier = 1;
    else if (suffix == "K")
        multiplier = 1ull << 10;
    else if (suffix == "M")
        multiplier = 1ull << 20;
    else if (suffix == "G")
        multiplier = 1ull << 30;
    else if (suffix == "T")
        multiplier = 1ull << 40;
    else
        return Error::format("invalid {} size '{}': unknown suffix '{}' (use K, M, G or T)", what, text,
                             std::string_view(rest, static_cast<size_t>(end - rest)));
    auto const bytes = checked_mul(number, multiplier);
    if (!bytes)
        return Error::format("{} size '{}' is too large", what, text);
    return *bytes;
}

Expected<uint64_t> parse_memory_size(std::string_view text) {
    return parse_size_with_suffix(text, "memory", 1ull << 20);
}

Expected<void> validate(VmConfig const& config, uint32_t max_vcpus) {
    if (config.kernel_path.empty() && !config.firmware_path)
        return Error("no kernel given: use --kernel PATH (or --firmware PATH to boot through firmware)");
    if (config.firmware_path && config.firmware_path->empty())
        return Error("the firmware path is empty");
    if (config.kernel_path.empty() && config.initrd_path)
        return Error("an initrd needs a kernel (--kernel PATH)");
    if (config.vcpu_count == 0)
        return Error("the VM needs at least 1 vCPU, got 0");
    if (config.vcpu_count > max_vcpus)
        return Error::format("{} vCPUs requested, but this host's KVM allows at most {}", config.vcpu_count, max_vcpus);
    if (config.threads_per_core != 1 && config.threads_per_core != 2)
        return Error::format("{} threads per core requested; 1 or 2 are supported", config.threads_per_core);
    if (config.threads_per_core == 2 && config.vcpu_count > 1 && config.vcpu_count % 2 != 0)
        return Error::format("with 2 threads per core (smt) the vCPU count must be 1 or even, got {}",
                             config.vcpu_count);
    if (config.cmdline.size() > MAX_CMDLINE_LENGTH)
        return Error::format("kernel command line is {} bytes, longer than the limit of {} bytes",
                             config.cmdline.size(), MAX_CMDLINE_LENGTH);
    if (config.memory_size < MIN_GUEST_MEMORY_SIZE || config.memory_size > MAX_GUEST_MEMORY_SIZE)
        return Error::format("memory size {} MiB is outside the supported range {} MiB to {} MiB",
                             config.memory_size >> 20, MIN_GUEST_MEMORY_SIZE >> 20, MAX_GUEST_MEMORY_SIZE >> 20);
    if (config.memory_size % 4096 != 0)
        return Error::format("memory size {} bytes is not a multiple of 4 KiB", config.memory_size);
    TRY(validate_devices(config));
    return {};
}

std::string effective_cmdline(VmConfig const& config) {
    std::string cmdline = config.cmdline;
    bool const names_root = cmdline.starts_with("root=") || cmdline.find(" root=") != std::string::npos;
    for (size_t i = 0; i < config.disks.size() && !names_root; ++i) {
        if (!config.disks[i].is_root_device)
            continue;
        std::string device = "vd";
        if (i >= 26) // vdz is followed by vdaa, as in Linux's virtio_blk naming
            device += static_cast<char>('a' + i / 26 - 1);
        device += static_cast<char>('a' + i % 26);
        if (!cmdline.empty())
            cmdline += ' ';
        cmdline += "root=/dev/" + device + (config.disks[i].read_only ? " ro" : " rw");
    }
    return cmdline;
}

namespace {

// Every entry point (flags, config file, API, kvmmd) checks its own paths and names its own
// field; this repeats the check for whatever reaches the machine builder by another road.
Expected<void> validate_paths(VmConfig const& config) {
    TRY(check_path_characters(config.kernel_path, "kernel"));
    if (config.firmware_path)
        TRY(check_path_characters(*config.firmware_path, "firmware"));
    if (config.initrd_path)
        TRY(check_path_characters(*config.initrd_path, "initrd"));
    if (!config.console.path.empty())
        TRY(check_path_characters(config.console.path, "console"));
    for (auto const& disk : config.disks)
        TRY(check_path_characters(disk.path, fmt::format("disk '{}'", disk.id)));
    for (auto const& net : config.nets)
        TRY(check_path_characters(net.tap_name, fmt::format("network interface '{}' TAP name", net.id)));
    if (config.vsock)
        TRY(check_path_characters(config.vsock->uds_path, "vsock Unix socket"));
    return {};
}

} // namespace

Expected<void> validate_network_interfaces(std::vector<NetConfig> const& nets) {
    std::set<std::string> net_ids;
    for (auto const& net : nets) {
        if (net.id.empty())
            return Error("a network interface has an empty id");
        if (!net_ids.insert(net.id).second)
            return Error::format("network interface id '{}' is used twice", net.id);
        if (net.tap_name.empty() == !net.tap_fd)
            return Error::format("network interface '{}' needs exactly one of a TAP name or a TAP fd", net.id);
        if (net.tap_name.size() > MAX_TAP_NAME_LENGTH)
            return Error::format("network interface '{}': TAP name '{}' is longer than {} bytes", net.id, net.tap_name,
                                 MAX_TAP_NAME_LENGTH);
    }
    // Two interfaces on one TAP would share (and steal) each other's frames, and two with one
    // MAC confuse every switch; Firecracker refuses both, and so does every kvmm entry point.
    for (size_t i = 0; i < nets.size(); ++i) {
        for (size_t j = 0; j < i; ++j) {
            auto const& net = nets[i];
            auto const& other = nets[j];
            if (!net.tap_name.empty() && net.tap_name == other.tap_name)
                return Error::format("network interface '{}': TAP '{}' is already used by '{}'", net.id, net.tap_name,
                                     other.id);
            if (net.tap_fd && net.tap_fd == other.tap_fd)
                return Error::format("network interface '{}': TAP fd {} is already used by '{}'", net.id, *net.tap_fd,
                                     other.id);
            if (net.mac && net.mac == other.mac)
                return Error::format("network interface '{}': MAC {} is already used by '{}'", net.id,
                                     format_mac_address(*net.mac), other.id);
        }
    }
    return {};
}

Expected<void> check_balloon_fits(uint64_t balloon_mib, uint64_t memory_mib) {
    if (balloon_mib > memory_mib)
        return Error::format("the balloon's amount_mib {} is larger than the guest memory ({} MiB)", balloon_mib,
                             memory_mib);
    return {};
}

size_t virtio_device_count(VmConfig const& config) {
    return config.disks.size() + config.nets.size() + (config.vsock ? 1 : 0) + (config.balloon ? 1 : 0) +
           (config.rng ? 1 : 0) + (config.virtio_console ? 1 : 0);
}

Expected<void> validate_devices(VmConfig const& config) {
    TRY(validate_paths(config));
    if (size_t const count = virtio_device_count(config); count > MAX_VIRTIO_DEVICES)
        return Error::format("{} virtio devices ({} disks, {} network interfaces and {} others) are more than the "
                             "{} a machine holds (one interrupt line each)",
                             count, config.disks.size(), config.nets.size(),
                             count - config.disks.size() - config.nets.size(), MAX_VIRTIO_DEVICES);
    // Ids are unique per device kind, as in Firecracker: a disk and a network interface may
    // share one (firectl names its root drive "1"; the Go SDK numbers interfaces from "1").
    std::set<std::string> disk_ids;
    size_t root_devices = 0;
    for (auto const& disk : config.disks) {
        if (disk.id.empty())
            return Error::format("disk '{}' has an empty id", disk.path);
        if (!disk_ids.insert(disk.id).second)
            return Error::format("disk id '{}' is used twice", disk.id);
        if (disk.path.empty())
            return Error::format("disk '{}' has no path", disk.id);
        root_devices += disk.is_root_device ? 1 : 0;
    }
    if (root_devices > 1)
        return Error::format("{} disks are marked as the root device; at most one may be", root_devices);
    TRY(validate_network_interfaces(config.nets));
    if (config.vsock && config.vsock->guest_cid < 3)
        return Error::format("vsock guest CID {} is reserved (guest CIDs start at 3)", config.vsock->guest_cid);
    if (config.vsock && config.vsock->uds_path.empty())
        return Error("vsock needs a Unix socket path");
    if (config.balloon)
        TRY(check_balloon_fits(config.balloon->target_mib, config.memory_size >> 20).with_context("balloon"));
    return {};
}

} // namespace kvmm

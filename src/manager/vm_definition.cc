#include "manager/vm_definition.h"

#include "base/path.h"
#include "config/device_options.h"
#include "config/mac_address.h"
#include "config/microvm_config.h"
#include "config/vm_config.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <limits>
#include <sys/stat.h>

namespace kvmm {

namespace {

// How a key of a [[disk]] / [[nic]] table becomes part of kvmm's option string.
enum class ValueKind {
    String, // copied verbatim
    Path,   // copied verbatim; a host path or name, held to base's rule for paths (base/path.h)
    Switch, // TOML boolean; true becomes "key=on", false is left out
    Number, // TOML integer or string (a size such as "10M", or a count)
};

struct OptionKey {
    std::string_view name; // the same in TOML and in the option string
    ValueKind kind;
};

// The order of these tables is the order of the keys in the generated option strings.
constexpr OptionKey DISK_KEYS[] = {
    { "path", ValueKind::Path },    { "id", ValueKind::String },         { "readonly", ValueKind::Switch },
    { "cache", ValueKind::String }, { "engine", ValueKind::String },     { "serial", ValueKind::String },
    { "root", ValueKind::Switch },  { "bw", ValueKind::Number },         { "bw_burst", ValueKind::Number },
    { "iops", ValueKind::Number },  { "iops_burst", ValueKind::Number }, { "format", ValueKind::String },
};
constexpr OptionKey NIC_KEYS[] = {
    { "tap", ValueKind::Path },     { "id", ValueKind::String },    { "mac", ValueKind::String },
    { "rx_bw", ValueKind::Number }, { "tx_bw", ValueKind::Number },
};
constexpr OptionKey VSOCK_KEYS[] = {
    { "cid", ValueKind::Number },
    { "uds", ValueKind::Path },
};

template <size_t N>
OptionKey const* find_key(OptionKey const (&keys)[N], std::string_view name) {
    for (auto const& key : keys) {
        if (key.name == name)
            return &key;
    }
    return nullptr;
}

template <size_t N>
std::string key_list(OptionKey const (&keys)[N]) {
    std::string list;
    for (auto const& key : keys)
        list += fmt::format("{}{}", list.empty() ? "" : ", ", key.name);
    return list;
}

std::string_view type_name(toml::node const& node) {
    switch (node.type()) {
    case toml::node_type::string:
        return "a string";
    case toml::node_type::integer:
        return "an integer";
    case toml::node_type::floating_point:
        return "a float";
    case toml::node_type::boolean:
        return "a boolean";
    case toml::node_type::table:
        return "a table";
    case toml::node_type::array:
        return "an array";
    default:
        return "a date/time";
    }
}

// A TOML value as the user wrote it, for error messages.
std::string show(toml::node const& node) {
    if (auto const* text = node.as_string())
        return fmt::format("\"{}\"", text->get());
    if (auto const* integer = node.as_integer())
        return fmt::format("{}", integer->get());
    if (auto const* boolean = node.as_boolean())
        return boolean->get() ? "true" : "false";
    return std::string(type_name(node));
}

Expected<std::string> get_string(toml::node const& node, std::string_view key) {
    if (auto const* text = node.as_string())
        return text->get();
    return Error::format("'{}' must be a string, got {} ({})", key, type_name(node), show(node));
}

Expected<bool> get_bool(toml::node const& node, std::string_view key) {
    if (auto const* boolean = node.as_boolean())
        return boolean->get();
    return Error::format("'{}' must be true or false, got {} ({})", key, type_name(node), show(node));
}

Expected<uint64_t> get_unsigned(toml::node const& node, std::string_view key, uint64_t min, uint64_t max) {
    auto const* integer = node.as_integer();
    if (integer == nullptr)
        return Error::format("'{}' must be an integer, got {} ({})", key, type_name(node), show(node));
    int64_t const value = integer->get();
    if (value < 0 || static_cast<uint64_t>(value) < min || static_cast<uint64_t>(value) > max)
        return Error::format("'{}' = {} is out of range {}..{}", key, value, min, max);
    return static_cast<uint64_t>(value);
}

// A size in MiB: an integer (MiB) or a string with a K/M/G/T suffix that kvmm's
// parse_memory_size() accepts, which must be a whole number of MiB.
// Returned in bytes: the guest memory keeps this form (VmConfig's) from here to kvmm.
Expected<uint64_t> get_mib_in_bytes(toml::node const& node, std::string_view key) {
    if (node.is_integer())
        return TRY(get_unsigned(node, key, 1, std::numeric_limits<uint64_t>::max() >> 20)) << 20;
    if (auto const* text = node.as_string()) {
        auto const bytes = parse_memory_size(text->get());
        if (!bytes)
            return Error::format("'{}' = \"{}\": {}", key, text->get(), bytes.error().message());
        if (*bytes == 0 || *bytes % (1ull << 20) != 0)
            return Error::format("'{}' = \"{}\" is not a positive whole number of MiB", key, text->get());
        return *bytes;
    }
    return Error::format("'{}' must be a size such as \"512M\" or an integer number of MiB, got {} ({})", key,
                         type_name(node), show(node));
}

Expected<uint64_t> get_mib(toml::node const& node, std::string_view key) {
    return TRY(get_mib_in_bytes(node, key)) >> 20;
}

// Values end up inside a comma-separated key=value list, so a comma would split them.
Expected<void> check_option_value(std::string_view key, std::string_view value) {
    if (value.find(',') != std::string_view::npos)
        return Error::format("'{}' = \"{}\" contains a ',', which kvmm's option syntax cannot carry", key, value);
    return {};
}

// Turns one [[disk]] / [[nic]] / [vsock] table into kvmm's option string.
template <size_t N>
Expected<std::string> table_to_option(toml::table const& table, std::string_view table_name,
                                      OptionKey const (&keys)[N]) {
    for (auto const& [key, node] : table) {
        if (find_key(keys, key.str()) == nullptr)
            return Error::format("unknown key '{}' in [{}] (known: {})", key.str(), table_name, key_list(keys));
    }
    std::string option;
    for (auto const& key : keys) {
        auto const* node = table.get(key.name);
        if (node == nullptr)
            continue;
        auto const full_key = fmt::format("{}.{}", table_name, key.name);
        std::string value;
        switch (key.kind) {
        case ValueKind::String:
            value = TRY(get_string(*node, full_key));
            break;
        case ValueKind::Path:
            value = TRY(get_string(*node, full_key));
            TRY(check_path_characters(value, fmt::format("'{}'", full_key)));
            break;
        case ValueKind::Switch:
            if (!TRY(get_bool(*node, full_key)))
                continue;
            value = "on";
            break;
        case ValueKind::Number:
            if (node->is_integer())
                value = fmt::format("{}", TRY(get_unsigned(*node, full_key, 0, std::numeric_limits<int64_t>::max())));
            else if (node->is_string())
                value = node->as_string()->get();
            else
                return Error::format("'{}' must be an integer or a size string, got {} ({})", full_key,
                                     type_name(*node), show(*node));
            break;
        }
        TRY(check_option_value(full_key, value));
        option += fmt::format("{}{}={}", option.empty() ? "" : ",", key.name, value);
    }
    return option;
}

Expected<std::vector<uint32_t>> parse_pins(toml::node const& node, std::string_view key) {
    auto const* array = node.as_array();
    if (array == nullptr)
        return Error::format("'{}' must be an array of host CPU numbers, got {} ({})", key, type_name(node),
                             show(node));
    if (array->empty())
        return Error::format("'{}' is an empty list of host CPUs", key);
    std::vector<uint32_t> cpus;
    for (auto const& element : *array)
        cpus.push_back(static_cast<uint32_t>(TRY(get_unsigned(element, key, 0, MAX_HOST_CPU))));
    return cpus;
}

// "vcpu12" -> 12; no sign, no leading zeros, so that each vCPU has exactly one key.
std::optional<uint32_t> pin_key_index(std::string_view key) {
    constexpr std::string_view prefix = "vcpu";
    if (!key.starts_with(prefix))
        return std::nullopt;
    auto const digits = key.substr(prefix.size());
    if (digits.empty() || (digits.size() > 1 && digits.front() == '0'))
        return std::nullopt;
    uint32_t index = 0;
    auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (error != std::errc() || end != digits.data() + digits.size())
        return std::nullopt;
    return index;
}

Expected<void> parse_top_level(toml::table const& root, VmDefinition& definition) {
    for (auto const& [key_object, node] : root) {
        std::string_view const key = key_object.str();
        if (key == "name")
            definition.name = TRY(get_string(node, key));
        else if (key == "vcpus")
            definition.vcpus = static_cast<uint32_t>(TRY(get_unsigned(node, key, 1, MAX_DEFINITION_VCPUS)));
        else if (key == "memory")
            definition.memory_size = TRY(get_mib_in_bytes(node, key));
        else if (key == "kernel")
            definition.kernel = TRY(get_string(node, key));
        else if (key == "initrd")
            definition.initrd = TRY(get_string(node, key));
        else if (key == "cmdline")
            definition.cmdline = TRY(get_string(node, key));
        else if (key == "autostart")
            definition.autostart = TRY(get_bool(node, key));
        else if (key == "rng")
            definition.rng = TRY(get_bool(node, key));
        else if (key == "restart") {
            auto const text = TRY(get_string(node, key));
            definition.restart = TRY(parse_restart_policy(text).with_context("'restart'"));
        } else if (key == "disk" || key == "nic") {
            auto const* array = node.as_array();
            if (array == nullptr || !array->is_array_of_tables())
                return Error::format("'{}' must be an array of tables ([[{}]]), got {}", key, key, type_name(node));
            size_t index = 0;
            for (auto const& element : *array) {
                size_t const position = index++;
                auto const table_name = fmt::format("{}[{}]", key, position);
                if (key == "disk") {
                    // allow_host_device_write is kvmmd's, not kvmm's: it is taken out before the
                    // table becomes kvmm's option string.
                    toml::table table = *element.as_table();
                    bool host_device_write = false;
                    if (auto const* flag = table.get(HOST_DEVICE_WRITE_KEY)) {
                        host_device_write =
                            TRY(get_bool(*flag, fmt::format("{}.{}", table_name, HOST_DEVICE_WRITE_KEY)));
                        table.erase(HOST_DEVICE_WRITE_KEY);
                    }
                    auto const option = TRY(table_to_option(table, table_name, DISK_KEYS));
                    definition.disks.push_back(TRY(parse_disk_option(option, position).with_context(table_name)));
                    if (host_device_write)
                        definition.host_device_write_disks.insert(definition.disks.back().id);
                } else {
                    auto const option = TRY(table_to_option(*element.as_table(), table_name, NIC_KEYS));
                    definition.nics.push_back(TRY(parse_net_option(option, position).with_context(table_name)));
                }
            }
        } else if (key == "vsock") {
            auto const* table = node.as_table();
            if (table == nullptr)
                return Error::format("'vsock' must be a table ([vsock]), got {}", type_name(node));
            auto const option = TRY(table_to_option(*table, "vsock", VSOCK_KEYS));
            definition.vsock = TRY(parse_vsock_option(option).with_context("vsock"));
        } else if (key == "resources") {
            auto const* table = node.as_table();
            if (table == nullptr)
                return Error::format("'resources' must be a table ([resources]), got {}", type_name(node));
            for (auto const& [resource_key, value] : *table) {
                auto const full_key = fmt::format("resources.{}", resource_key.str());
                if (resource_key == "cpu_weight")
                    definition.cpu_weight =
                        static_cast<uint32_t>(TRY(get_unsigned(value, full_key, MIN_CPU_WEIGHT, MAX_CPU_WEIGHT)));
                else if (resource_key == "cpu_quota_percent")
                    definition.cpu_quota_percent = static_cast<uint32_t>(
                        TRY(get_unsigned(value, full_key, 1, std::numeric_limits<uint32_t>::max())));
                else if (resource_key == "memory_limit")
                    definition.memory_limit_mib = TRY(get_mib(value, full_key));
                else
                    return Error::format("unknown key '{}' in [resources] (known: cpu_weight, cpu_quota_percent, "
                                         "memory_limit)",
                                         resource_key.str());
            }
        } else if (key == "pinning") {
            auto const* table = node.as_table();
            if (table == nullptr)
                return Error::format("'pinning' must be a table ([pinning]), got {}", type_name(node));
            for (auto const& [pin_key, value] : *table) {
                auto const index = pin_key_index(pin_key.str());
                auto const full_key = fmt::format("pinning.{}", pin_key.str());
                if (!index)
                    return Error::format("unknown key '{}' in [pinning] (expected vcpuN, e.g. vcpu0)", pin_key.str());
                if (*index >= MAX_DEFINITION_VCPUS)
                    return Error::format("'{}': vCPU {} is beyond the limit of {} vCPUs", full_key, *index,
                                         MAX_DEFINITION_VCPUS);
                if (definition.vcpu_pins.size() <= *index)
                    definition.vcpu_pins.resize(*index + 1);
                definition.vcpu_pins[*index] = TRY(parse_pins(value, full_key));
            }
        } else {
            return Error::format("unknown key '{}' at the top level of the definition", key);
        }
    }
    return {};
}

// TOML basic string (TOML 1.0 "String"): quotes, backslashes and control characters escaped.
std::string quote(std::string_view text) {
    std::string quoted = "\"";
    for (char const c : text) {
        auto const byte = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\')
            quoted += fmt::format("\\{}", c);
        else if (c == '\n')
            quoted += "\\n";
        else if (c == '\t')
            quoted += "\\t";
        else if (byte < 0x20 || byte == 0x7f)
            quoted += fmt::format("\\u{:04X}", byte);
        else
            quoted += c;
    }
    return quoted + "\"";
}

// One "key = value" line of a device table.
std::string toml_line(std::string_view key, std::string_view value) {
    return fmt::format("{} = {}\n", key, quote(value));
}
std::string toml_line(std::string_view key, uint64_t value) { return fmt::format("{} = {}\n", key, value); }
std::string toml_line(std::string_view key, bool value) { return fmt::format("{} = {}\n", key, value); }

// A per-second bucket as the table keys hold it (the flag parsers' rate-limit form).
std::string bucket_lines(std::string_view key, std::string_view burst_key,
                         std::optional<TokenBucketConfig> const& bucket) {
    if (!bucket)
        return {};
    std::string lines = toml_line(key, bucket->size);
    if (bucket->one_time_burst != 0 && !burst_key.empty())
        lines += toml_line(burst_key, bucket->one_time_burst);
    return lines;
}

std::string disk_table(DiskConfig const& disk) {
    std::string lines = toml_line("path", disk.path) + toml_line("id", disk.id);
    if (disk.read_only)
        lines += toml_line("readonly", true);
    if (disk.cache == DiskConfig::CacheMode::WriteThrough)
        lines += toml_line("cache", std::string_view("writethrough"));
    if (disk.engine == DiskConfig::Engine::Sync)
        lines += toml_line("engine", std::string_view("sync"));
    if (disk.format == DiskConfig::Format::Qcow2)
        lines += toml_line("format", std::string_view("qcow2"));
    if (disk.serial)
        lines += toml_line("serial", *disk.serial);
    if (disk.is_root_device)
        lines += toml_line("root", true);
    return lines + bucket_lines("bw", "bw_burst", disk.rate_limit.bandwidth) +
           bucket_lines("iops", "iops_burst", disk.rate_limit.ops);
}

std::string nic_table(NetConfig const& nic) {
    std::string lines = toml_line("tap", nic.tap_name) + toml_line("id", nic.id);
    if (nic.mac)
        lines += toml_line("mac", format_mac_address(*nic.mac));
    return lines + bucket_lines("rx_bw", "", nic.rx_rate_limit.bandwidth) +
           bucket_lines("tx_bw", "", nic.tx_rate_limit.bandwidth);
}

} // namespace

Expected<void> validate_vm_name(std::string_view name) {
    if (name.empty() || name.size() > MAX_VM_NAME_LENGTH)
        return Error::format("VM name '{}' must be 1 to {} characters long, it has {}", name, MAX_VM_NAME_LENGTH,
                             name.size());
    if (name.front() == '.')
        return Error::format("VM name '{}' must not start with '.'", name);
    for (char const c : name) {
        bool const allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                             c == '.' || c == '-';
        if (!allowed)
            return Error::format("VM name '{}' contains '{}'; only letters, digits, '_', '.' and '-' are allowed", name,
                                 c);
    }
    return {};
}

std::string_view restart_policy_name(VmDefinition::RestartPolicy policy) {
    switch (policy) {
    case VmDefinition::RestartPolicy::Never:
        return "never";
    case VmDefinition::RestartPolicy::OnFailure:
        return "on-failure";
    case VmDefinition::RestartPolicy::Always:
        return "always";
    }
    return "never";
}

Expected<VmDefinition::RestartPolicy> parse_restart_policy(std::string_view text) {
    for (auto const policy : { VmDefinition::RestartPolicy::Never, VmDefinition::RestartPolicy::OnFailure,
                               VmDefinition::RestartPolicy::Always }) {
        if (text == restart_policy_name(policy))
            return policy;
    }
    return Error::format("restart policy '{}' is not one of never, on-failure, always", text);
}

Expected<void> validate_definition(VmDefinition const& definition) {
    TRY(validate_vm_name(definition.name));
    if (definition.vcpus == 0 || definition.vcpus > MAX_DEFINITION_VCPUS)
        return Error::format("'vcpus' = {} is out of range 1..{}", definition.vcpus, MAX_DEFINITION_VCPUS);
    if (definition.memory_size == 0 || definition.memory_size % (1ull << 20) != 0)
        return Error::format("'memory' = {} bytes is not a positive whole number of MiB", definition.memory_size);
    if (definition.kernel.empty())
        return Error("'kernel' is missing or empty: a definition needs a kernel image path");
    if (definition.initrd && definition.initrd->empty())
        return Error("'initrd' is empty: leave it out or give a path");
    TRY(check_path_characters(definition.kernel, "'kernel'"));
    if (definition.initrd)
        TRY(check_path_characters(*definition.initrd, "'initrd'"));
    for (size_t i = 0; i < definition.nics.size(); ++i) {
        if (definition.nics[i].tap_name.empty())
            return Error::format("nic[{}] '{}' needs 'tap' (a TAP device name)", i, definition.nics[i].id);
    }

    // The machine kvmm will build, checked by the config library's one validate().
    TRY(validate(machine_config_of(definition), MAX_DEFINITION_VCPUS)
            .with_context(fmt::format("VM '{}'", definition.name)));

    if (definition.cpu_weight && (*definition.cpu_weight < MIN_CPU_WEIGHT || *definition.cpu_weight > MAX_CPU_WEIGHT))
        return Error::format("'resources.cpu_weight' = {} is out of range {}..{}", *definition.cpu_weight,
                             MIN_CPU_WEIGHT, MAX_CPU_WEIGHT);
    // More than 100% per vCPU cannot be used by the vCPU threads and only hides mistakes.
    uint64_t const max_quota = 100ull * definition.vcpus;
    if (definition.cpu_quota_percent &&
        (*definition.cpu_quota_percent == 0 || *definition.cpu_quota_percent > max_quota))
        return Error::format("'resources.cpu_quota_percent' = {} is out of range 1..{} (100 per vCPU, {} vCPUs)",
                             *definition.cpu_quota_percent, max_quota, definition.vcpus);
    // The limit covers the whole kvmm process; below guest RAM the guest alone could get the VM killed.
    if (definition.memory_limit_mib && *definition.memory_limit_mib < (definition.memory_size >> 20))
        return Error::format("'resources.memory_limit' = {} MiB is below the guest's memory of {} MiB",
                             *definition.memory_limit_mib, definition.memory_size >> 20);

    if (definition.vcpu_pins.size() > definition.vcpus) {
        // Only an error if a pinned entry lies beyond the last vCPU; trailing empty lists are harmless.
        for (size_t i = definition.vcpus; i < definition.vcpu_pins.size(); ++i) {
            if (!definition.vcpu_pins[i].empty())
                return Error::format("'pinning.vcpu{}' pins a vCPU that does not exist: the VM has {} vCPU(s)", i,
                                     definition.vcpus);
        }
    }
    for (size_t i = 0; i < definition.vcpu_pins.size(); ++i) {
        for (uint32_t const cpu : definition.vcpu_pins[i]) {
            if (cpu > MAX_HOST_CPU)
                return Error::format("'pinning.vcpu{}' names host CPU {}, beyond the largest possible CPU {}", i, cpu,
                                     MAX_HOST_CPU);
        }
    }
    return {};
}

Expected<void> check_host_block_devices(VmDefinition const& definition) {
    for (auto const& disk : definition.disks) {
        struct stat status {};
        if (disk.read_only || ::stat(disk.path.c_str(), &status) != 0 || !S_ISBLK(status.st_mode))
            continue; // a missing path is kvmm's to report at start
        if (!definition.host_device_write_disks.contains(disk.id))
            return Error::format("disk '{}': '{}' is a host block device and would be writable by the guest; set "
                                 "readonly = true, or {} = true in its [[disk]] table if the guest may write it",
                                 disk.id, disk.path, HOST_DEVICE_WRITE_KEY);
    }
    return {};
}

Expected<VmDefinition> parse_definition(std::string_view toml_text) {
    toml::table root;
    try {
        root = toml::parse(toml_text);
    } catch (toml::parse_error const& error) {
        return Error::format("malformed TOML at line {}, column {}: {}", error.source().begin.line,
                             error.source().begin.column, error.description());
    }
    VmDefinition definition;
    TRY(parse_top_level(root, definition));
    if (root.get("name") == nullptr)
        return Error("'name' is missing: a definition needs a VM name");
    while (!definition.vcpu_pins.empty() && definition.vcpu_pins.back().empty())
        definition.vcpu_pins.pop_back();
    TRY(validate_definition(definition));
    return definition;
}

std::string to_toml(VmDefinition const& definition) {
    std::string text;
    text += fmt::format("name = {}\n", quote(definition.name));
    text += fmt::format("vcpus = {}\n", definition.vcpus);
    text += fmt::format("memory = {}\n", definition.memory_size >> 20); // MiB, as the layout has it
    text += fmt::format("kernel = {}\n", quote(definition.kernel));
    if (definition.initrd)
        text += fmt::format("initrd = {}\n", quote(*definition.initrd));
    text += fmt::format("cmdline = {}\n", quote(definition.cmdline));
    text += fmt::format("autostart = {}\n", definition.autostart);
    text += fmt::format("restart = {}\n", quote(restart_policy_name(definition.restart)));
    text += fmt::format("rng = {}\n", definition.rng);
    for (auto const& disk : definition.disks) {
        text += fmt::format("\n[[disk]]\n{}", disk_table(disk));
        if (definition.host_device_write_disks.contains(disk.id))
            text += toml_line(HOST_DEVICE_WRITE_KEY, true);
    }
    for (auto const& nic : definition.nics)
        text += fmt::format("\n[[nic]]\n{}", nic_table(nic));
    if (definition.vsock)
        text += fmt::format("\n[vsock]\n{}{}", toml_line("cid", uint64_t { definition.vsock->guest_cid }),
                            toml_line("uds", definition.vsock->uds_path));
    if (definition.cpu_weight || definition.cpu_quota_percent || definition.memory_limit_mib) {
        text += "\n[resources]\n";
        if (definition.cpu_weight)
            text += fmt::format("cpu_weight = {}\n", *definition.cpu_weight);
        if (definition.cpu_quota_percent)
            text += fmt::format("cpu_quota_percent = {}\n", *definition.cpu_quota_percent);
        if (definition.memory_limit_mib)
            text += fmt::format("memory_limit = {}\n", *definition.memory_limit_mib);
    }
    bool const any_pins = std::any_of(definition.vcpu_pins.begin(), definition.vcpu_pins.end(),
                                      [](auto const& cpus) { return !cpus.empty(); });
    if (any_pins) {
        text += "\n[pinning]\n";
        for (size_t i = 0; i < definition.vcpu_pins.size(); ++i) {
            if (!definition.vcpu_pins[i].empty())
                text += fmt::format("vcpu{} = [{}]\n", i, fmt::join(definition.vcpu_pins[i], ", "));
        }
    }
    return text;
}

VmConfig machine_config_of(VmDefinition const& definition) {
    VmConfig config;
    config.kernel_path = definition.kernel;
    config.initrd_path = definition.initrd;
    config.cmdline = definition.cmdline;
    config.vcpu_count = definition.vcpus;
    config.memory_size = definition.memory_size;
    config.disks = definition.disks;
    config.nets = definition.nics;
    config.vsock = definition.vsock;
    if (definition.rng)
        config.rng = RngConfig {};
    return config;
}

std::string kvmm_machine_file(VmDefinition const& definition) {
    return machine_config_file(machine_config_of(definition)).dump(2) + "\n";
}

std::vector<std::string> kvmm_arguments(VmDefinition const& definition, std::string const& kvmm_binary,
                                        std::string const& machine_file, std::string const& api_socket,
                                        std::string const& console_socket) {
    return { kvmm_binary, "--config-file", machine_file,
             "--id",      definition.name, "--control-sock",
             api_socket,  "--console",     fmt::format("socket={}", console_socket) };
}

} // namespace kvmm

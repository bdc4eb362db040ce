#include "config/microvm_config.h"

#include "config/json_fields.h"
#include "config/resource_parsers.h"

#include <algorithm>

namespace kvmm {

using nlohmann::json;

Expected<void> put_drive(MicrovmConfig& config, DiskConfig drive, std::string cache_type) {
    auto& disks = config.instance.vm.disks;
    auto existing = std::find_if(disks.begin(), disks.end(), [&](DiskConfig const& d) { return d.id == drive.id; });
    if (drive.is_root_device) {
        for (auto const& disk : disks) {
            if (disk.is_root_device && disk.id != drive.id)
                return Error::format("drive '{}': drive '{}' is already the root device", drive.id, disk.id);
        }
    }
    config.drive_cache_types[drive.id] = std::move(cache_type);
    if (existing != disks.end())
        *existing = std::move(drive);
    else
        disks.push_back(std::move(drive));
    return {};
}

Expected<void> put_network_interface(MicrovmConfig& config, NetConfig net) {
    // The interfaces as they would be, checked by the one rule set every entry point uses.
    auto nets = config.instance.vm.nets;
    auto existing = std::find_if(nets.begin(), nets.end(), [&](NetConfig const& n) { return n.id == net.id; });
    if (existing != nets.end())
        *existing = std::move(net);
    else
        nets.push_back(std::move(net));
    TRY(validate_network_interfaces(nets).with_context("network-interface"));
    config.instance.vm.nets = std::move(nets);
    return {};
}

json microvm_config_to_json(MicrovmConfig const& config) {
    VmConfig const& vm = config.instance.vm;
    json out = json::object();
    out["machine-config"] = machine_config_to_json(vm, config.instance.machine);
    if (!vm.kernel_path.empty())
        out["boot-source"] = boot_source_to_json(vm);
    out["drives"] = json::array();
    for (auto const& disk : vm.disks) {
        auto const cache_type = config.drive_cache_types.find(disk.id);
        out["drives"].push_back(
            // A drive that came from kvmm's flags, not a request, reports kvmm's own mode.
            drive_to_json(disk, cache_type == config.drive_cache_types.end() ? "Writeback" : cache_type->second));
    }
    out["network-interfaces"] = json::array();
    for (auto const& net : vm.nets)
        out["network-interfaces"].push_back(network_interface_to_json(net));
    out["vsock"] = vm.vsock ? vsock_to_json(*vm.vsock) : json(nullptr);
    out["entropy"] = vm.rng ? entropy_to_json(*vm.rng) : json(nullptr);
    out["balloon"] = vm.balloon ? balloon_to_json(*vm.balloon) : json(nullptr);
    out["logger"] = config.logger ? logger_to_json(*config.logger) : json(nullptr);
    out["metrics"] = config.metrics ? metrics_to_json(*config.metrics) : json(nullptr);
    return out;
}

namespace {

// kvmm's own drive fields (ConfigDialect::Kvmm), which Firecracker's Drive has no place for.
constexpr std::string_view KVMM_CACHE_FIELD = "kvmm_cache";
constexpr std::string_view KVMM_SERIAL_FIELD = "kvmm_serial";

// Takes kvmm's own fields out of a drive object (so that the Firecracker parser sees only its
// own) and applies them to the parsed drive afterwards.
struct DriveExtensions {
    std::optional<DiskConfig::CacheMode> cache;
    std::optional<std::string> serial;

    static Expected<DriveExtensions> take(json& drive) {
        DriveExtensions extensions;
        if (!drive.is_object())
            return extensions;
        if (auto found = drive.find(KVMM_CACHE_FIELD); found != drive.end()) {
            if (*found == "writeback")
                extensions.cache = DiskConfig::CacheMode::WriteBack;
            else if (*found == "writethrough")
                extensions.cache = DiskConfig::CacheMode::WriteThrough;
            else
                return Error::format("drive: {} must be \"writeback\" or \"writethrough\", got {}", KVMM_CACHE_FIELD,
                                     found->dump());
            drive.erase(found);
        }
        if (auto found = drive.find(KVMM_SERIAL_FIELD); found != drive.end()) {
            if (!found->is_string())
                return Error::format("drive: {} must be a string, got {}", KVMM_SERIAL_FIELD, found->type_name());
            extensions.serial = found->get<std::string>();
            drive.erase(found);
        }
        return extensions;
    }

    void apply(DiskConfig& disk) const {
        if (cache)
            disk.cache = *cache;
        if (serial)
            disk.serial = serial;
    }
};

} // namespace

Expected<MicrovmConfig> load_config_file(std::string const& json_text) {
    return load_config_file(json_text, ConfigDialect::Firecracker);
}

Expected<MicrovmConfig> load_config_file(std::string const& json_text, ConfigDialect dialect) {
    json document = TRY(parse_json_text(json_text).with_context("config file"));
    auto fields = TRY(JsonFields::create(document, "config file",
                                         { "boot-source", "machine-config", "drives", "network-interfaces", "vsock",
                                           "entropy", "balloon", "logger", "metrics", "mmds-config", "cpu-config" }));
    if (fields.has("mmds-config"))
        return Error("config file: mmds-config is not supported by kvmm (no microVM metadata service)");
    if (fields.has("cpu-config"))
        return Error("config file: cpu-config is not supported by kvmm (no CPU templates)");

    MicrovmConfig config;
    auto const* boot_source = fields.get("boot-source");
    if (!boot_source)
        return Error("config file: missing required section 'boot-source'");
    TRY(apply_boot_source(*boot_source, config.instance.vm));
    if (auto const* machine = fields.get("machine-config"))
        TRY(apply_machine_config(*machine, false, config.instance.vm, config.instance.machine, dialect));

    auto const* drives = fields.get("drives");
    if (drives && !drives->is_array())
        return Error::format("config file: 'drives' must be an array, got {}", drives->type_name());
    for (auto item : drives ? *drives : json::array()) {
        DriveExtensions extensions;
        if (dialect == ConfigDialect::Kvmm)
            extensions = TRY(DriveExtensions::take(item));
        DiskConfig disk = TRY(parse_drive(item, "", dialect));
        extensions.apply(disk);
        std::string cache_type = TRY(parse_drive_cache_type(item));
        TRY(put_drive(config, std::move(disk), std::move(cache_type)));
    }
    auto const* nets = fields.get("network-interfaces");
    if (nets && !nets->is_array())
        return Error::format("config file: 'network-interfaces' must be an array, got {}", nets->type_name());
    for (auto const& item : nets ? *nets : json::array()) {
        NetConfig net = TRY(parse_network_interface(item, "", dialect));
        TRY(put_network_interface(config, std::move(net)));
    }
    if (auto const* vsock = fields.get("vsock"))
        config.instance.vm.vsock = TRY(parse_vsock(*vsock));
    if (auto const* entropy = fields.get("entropy"))
        config.instance.vm.rng = TRY(parse_entropy(*entropy));
    if (auto const* balloon = fields.get("balloon")) {
        auto parsed = TRY(parse_balloon(*balloon));
        TRY(check_balloon_fits(parsed.target_mib, config.instance.vm.memory_size >> 20).with_context("balloon"));
        config.instance.vm.balloon = std::move(parsed);
    }
    if (auto const* logger = fields.get("logger"))
        config.logger = TRY(parse_logger(*logger));
    if (auto const* metrics = fields.get("metrics"))
        config.metrics = TRY(parse_metrics(*metrics));
    return config;
}

json machine_config_file(VmConfig const& vm) {
    MicrovmConfig config;
    config.instance.vm = vm;
    config.instance.machine.smt = vm.threads_per_core == 2;
    if (vm.transparent_huge_pages)
        config.instance.machine.huge_pages = MachineOptions::HugePages::Transparent;
    json document = microvm_config_to_json(config);
    // Firecracker's boot_args absent means its default command line; kvmm's is the one given.
    document["boot-source"]["boot_args"] = vm.cmdline;
    for (size_t i = 0; i < vm.disks.size(); ++i) {
        auto& drive = document["drives"][i];
        drive[KVMM_CACHE_FIELD] =
            vm.disks[i].cache == DiskConfig::CacheMode::WriteThrough ? "writethrough" : "writeback";
        if (vm.disks[i].serial)
            drive[KVMM_SERIAL_FIELD] = *vm.disks[i].serial;
    }
    document.erase("logger");
    document.erase("metrics");
    return document;
}

} // namespace kvmm

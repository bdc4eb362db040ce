#include "config/resource_parsers.h"

#include "base/path.h"
#include "config/json_fields.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace kvmm {
namespace {

using nlohmann::json;

// VMADDR_CID_ANY (-1U) is not an address; CIDs 0..2 are reserved for the hypervisor and host.
constexpr uint64_t MIN_GUEST_CID = 3;
constexpr uint64_t MAX_GUEST_CID = 0xffff'fffeull;

// A bucket as given; one of size or refill_time 0 does not limit (RateLimiter's rule).
Expected<TokenBucketConfig> parse_token_bucket(json const& body, std::string const& what) {
    auto fields = TRY(JsonFields::create(body, what, { "size", "one_time_burst", "refill_time" }));
    TokenBucketConfig bucket;
    bucket.size = TRY(fields.required_unsigned_integer("size"));
    bucket.one_time_burst = TRY(fields.unsigned_integer("one_time_burst")).value_or(0);
    bucket.refill_time_ms = TRY(fields.required_unsigned_integer("refill_time"));
    return bucket;
}

// A PATCH's rate limiter: buckets as given, so that a bucket of size 0 removes a limit and a
// missing one keeps it (RateLimiter::update).
Expected<std::optional<RateLimitConfig>> optional_rate_limit_changes(JsonFields const& fields, std::string_view key) {
    auto const* value = fields.get(key);
    if (!value)
        return std::optional<RateLimitConfig>();
    return std::optional<RateLimitConfig>(TRY(parse_rate_limiter(*value, fmt::format("{}.{}", fields.what(), key))));
}

// A PUT's rate limiter: as in Firecracker, a bucket that never refills or holds nothing is
// no bucket at all.
Expected<std::optional<RateLimitConfig>> optional_rate_limiter(JsonFields const& fields, std::string_view key) {
    auto changes = TRY(optional_rate_limit_changes(fields, key));
    if (!changes)
        return changes;
    return std::optional<RateLimitConfig>(apply_rate_limit_changes({}, *changes));
}

Expected<std::string> non_empty_string(JsonFields const& fields, std::string_view key) {
    std::string value = TRY(fields.required_string(key));
    if (value.empty())
        return Error::format("{}: field '{}' must not be empty", fields.what(), key);
    return value;
}

// A field naming a host file, socket or interface: non-empty and without control characters
// (base/path.h), so that what is opened is exactly what the client sent.
Expected<std::string> path_field(JsonFields const& fields, std::string_view key) {
    std::string value = TRY(non_empty_string(fields, key));
    TRY(check_path_characters(value, fmt::format("{}: field '{}'", fields.what(), key)));
    return value;
}

// As path_field, for an optional field: absent is fine, present must be non-empty.
Expected<std::optional<std::string>> optional_path_field(JsonFields const& fields, std::string_view key) {
    auto value = TRY(fields.string(key));
    if (!value)
        return value;
    if (value->empty())
        return Error::format("{}: field '{}' must not be empty", fields.what(), key);
    TRY(check_path_characters(*value, fmt::format("{}: field '{}'", fields.what(), key)));
    return value;
}

// The id in the body must match the id in the URL (Firecracker checks the same).
Expected<std::string> checked_body_id(JsonFields const& fields, std::string_view key, std::string_view path_id,
                                      ConfigDialect dialect = ConfigDialect::Firecracker) {
    std::string id = TRY(fields.required_string(key));
    if (dialect == ConfigDialect::Firecracker) {
        TRY(validate_resource_id(id, fmt::format("{}.{}", fields.what(), key)));
    } else {
        // The ids kvmm's flags accept (config/device_options.h): anything a ',' does not split.
        if (id.empty() || id.find(',') != std::string::npos)
            return Error::format("{}: {} '{}' must be non-empty and without ','", fields.what(), key, id);
        TRY(check_path_characters(id, fmt::format("{}: field '{}'", fields.what(), key)));
    }
    if (!path_id.empty() && id != path_id)
        return Error::format("{}: {} '{}' in the body does not match '{}' in the path", fields.what(), key, id,
                             path_id);
    return id;
}

// Firecracker's MacAddr syntax: six colon-separated pairs of hex digits. Unlike kvmm's own
// --net mac= (backends/net/mac_address.h), any address is taken as given, multicast and
// locally administered ones included, because Firecracker accepts them (its MacAddr::from_str
// checks only the syntax) and clients such as the Go SDK pass addresses through unchanged.
Expected<MacAddress> parse_guest_mac(std::string_view text) {
    MacAddress address {};
    auto const fail = [&] {
        return Error::format("network-interface: guest_mac '{}' is not a MAC address (expected six "
                             "colon-separated pairs of hex digits)",
                             text);
    };
    if (text.size() != 17)
        return fail();
    for (size_t i = 0; i < address.size(); ++i) {
        std::string_view const pair = text.substr(i * 3, 2);
        if (i < 5 && text[i * 3 + 2] != ':')
            return fail();
        if (!std::isxdigit(static_cast<unsigned char>(pair[0])) || !std::isxdigit(static_cast<unsigned char>(pair[1])))
            return fail();
        std::from_chars(pair.data(), pair.data() + 2, address[i], 16);
    }
    return address;
}

// The fields of Firecracker's Drive object.
Expected<JsonFields> drive_fields(json const& body) {
    return JsonFields::create(body, "drive",
                              { "drive_id", "path_on_host", "is_root_device", "is_read_only", "partuuid", "cache_type",
                                "io_engine", "rate_limiter", "socket", "format" });
}

Expected<std::string> canonical_level(std::string_view level) {
    static constexpr std::string_view LEVELS[] = { "Error", "Warning", "Info", "Debug", "Trace", "Off" };
    for (auto candidate : LEVELS) {
        if (std::equal(level.begin(), level.end(), candidate.begin(), candidate.end(),
                       [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
            return std::string(candidate);
    }
    if (level == "warn" || level == "Warn" || level == "WARN")
        return std::string("Warning");
    return Error::format("logger: level '{}' is not one of Error, Warning, Info, Debug, Trace, Off", level);
}

} // namespace

Expected<void> validate_resource_id(std::string_view id, std::string_view what) {
    if (id.empty() || id.size() > 64)
        return Error::format("{}: id '{}' must be 1 to 64 characters long", what, id);
    for (char c : id) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'))
            return Error::format("{}: id '{}' may contain only ASCII letters, digits and '_'", what, id);
    }
    return {};
}

Expected<RateLimitConfig> parse_rate_limiter(json const& body, std::string_view what) {
    auto fields = TRY(JsonFields::create(body, what, { "bandwidth", "ops" }));
    RateLimitConfig limit;
    if (auto const* bandwidth = fields.get("bandwidth"))
        limit.bandwidth = TRY(parse_token_bucket(*bandwidth, fmt::format("{}.bandwidth", what)));
    if (auto const* ops = fields.get("ops"))
        limit.ops = TRY(parse_token_bucket(*ops, fmt::format("{}.ops", what)));
    return limit;
}

Expected<void> apply_machine_config(json const& body, bool partial, VmConfig& vm, MachineOptions& machine,
                                    ConfigDialect dialect) {
    uint64_t const max_vcpus = dialect == ConfigDialect::Firecracker ? MAX_API_VCPUS : UINT32_MAX;
    auto fields = TRY(
        JsonFields::create(body, "machine-config",
                           { "vcpu_count", "mem_size_mib", "smt", "track_dirty_pages", "cpu_template", "huge_pages" }));
    if (partial && fields.empty())
        return Error("machine-config: empty PATCH request");
    // Work on copies: if any field is wrong, nothing changes.
    uint64_t vcpus = vm.vcpu_count;
    uint64_t memory_mib = vm.memory_size >> 20;
    MachineOptions options = partial ? machine : MachineOptions {};
    if (!partial) {
        vcpus = TRY(fields.required_unsigned_integer("vcpu_count", max_vcpus));
        memory_mib = TRY(fields.required_unsigned_integer("mem_size_mib", UINT64_MAX >> 20));
    } else {
        vcpus = TRY(fields.unsigned_integer("vcpu_count", max_vcpus)).value_or(vcpus);
        memory_mib = TRY(fields.unsigned_integer("mem_size_mib", UINT64_MAX >> 20)).value_or(memory_mib);
    }
    if (vcpus == 0)
        return Error("machine-config: vcpu_count must be between 1 and 32, got 0");
    if (memory_mib == 0)
        return Error("machine-config: mem_size_mib must be at least 1");
    if (auto smt = TRY(fields.boolean("smt")))
        options.smt = *smt;
    if (auto track = TRY(fields.boolean("track_dirty_pages")))
        options.track_dirty_pages = *track;
    if (auto template_name = TRY(fields.string("cpu_template")); template_name && *template_name != "None")
        return Error::format("machine-config: kvmm has no CPU templates; cpu_template must be \"None\" or absent, got "
                             "'{}'",
                             *template_name);
    if (auto huge_pages = TRY(fields.string("huge_pages"))) {
        if (*huge_pages == "None")
            options.huge_pages = MachineOptions::HugePages::None;
        else if (*huge_pages == "Transparent")
            options.huge_pages = MachineOptions::HugePages::Transparent;
        else if (*huge_pages == "2M")
            options.huge_pages = MachineOptions::HugePages::Hugetlbfs2M;
        else
            return Error::format("machine-config: huge_pages must be \"None\", \"Transparent\" or \"2M\", got '{}'",
                                 *huge_pages);
    }
    // Firecracker: with SMT the vCPUs come in sibling pairs.
    if (options.smt && vcpus > 1 && vcpus % 2 != 0)
        return Error::format("machine-config: with smt enabled vcpu_count must be 1 or even, got {}", vcpus);
    // Firecracker refuses to shrink memory below a configured balloon (resources.rs,
    // MachineConfigError::IncompatibleBalloonSize).
    if (vm.balloon)
        TRY(check_balloon_fits(vm.balloon->target_mib, memory_mib).with_context("machine-config"));
    if (options.huge_pages == MachineOptions::HugePages::Hugetlbfs2M && memory_mib % 2 != 0)
        return Error::format("machine-config: with 2M huge pages mem_size_mib must be a multiple of 2, got {}",
                             memory_mib);
    vm.vcpu_count = static_cast<uint32_t>(vcpus);
    vm.memory_size = memory_mib << 20;
    vm.transparent_huge_pages = options.huge_pages == MachineOptions::HugePages::Transparent;
    machine = options;
    return {};
}

Expected<void> apply_boot_source(json const& body, VmConfig& vm) {
    auto fields = TRY(JsonFields::create(body, "boot-source", { "kernel_image_path", "initrd_path", "boot_args" }));
    std::string kernel = TRY(path_field(fields, "kernel_image_path"));
    auto initrd = TRY(optional_path_field(fields, "initrd_path"));
    auto boot_args = TRY(fields.string("boot_args"));
    if (boot_args && boot_args->size() > MAX_CMDLINE_LENGTH)
        return Error::format("boot-source: boot_args of {} bytes exceeds {} bytes", boot_args->size(),
                             MAX_CMDLINE_LENGTH);
    vm.kernel_path = std::move(kernel);
    vm.initrd_path = std::move(initrd);
    // Without boot_args Firecracker uses its default command line; kvmm's equivalent keeps the
    // serial console (Firecracker's disables the UART with 8250.nr_uarts=0).
    vm.cmdline = boot_args.value_or(std::string(DEFAULT_BOOT_ARGS));
    return {};
}

Expected<DiskConfig> parse_drive(json const& body, std::string_view path_id, ConfigDialect dialect) {
    auto fields = TRY(drive_fields(body));
    if (fields.has("partuuid"))
        return Error("drive: partuuid is not supported by kvmm; the root device is passed as root=/dev/vdX");
    if (fields.has("socket"))
        return Error("drive: vhost-user block devices (socket) are not supported by kvmm");
    DiskConfig disk;
    disk.id = TRY(checked_body_id(fields, "drive_id", path_id, dialect));
    disk.path = TRY(path_field(fields, "path_on_host"));
    disk.is_root_device = TRY(fields.required_boolean("is_root_device"));
    disk.read_only = TRY(fields.boolean("is_read_only")).value_or(false);
    // kvmm always honours guest flushes: Firecracker's "Unsafe" (flushes ignored) gets the safer
    // write-back behaviour too.
    TRY(parse_drive_cache_type(body));
    disk.cache = DiskConfig::CacheMode::WriteBack;
    auto engine = TRY(fields.string("io_engine")).value_or("Sync");
    if (engine == "Sync")
        disk.engine = DiskConfig::Engine::Sync;
    else if (engine == "Async")
        disk.engine = DiskConfig::Engine::IoUring;
    else
        return Error::format("drive: io_engine must be \"Sync\" or \"Async\", got '{}'", engine);
    // kvmm extension: the image format, raw unless given (never probed).
    auto format = TRY(fields.string("format")).value_or("raw");
    if (format == "raw")
        disk.format = DiskConfig::Format::Raw;
    else if (format == "qcow2")
        disk.format = DiskConfig::Format::Qcow2;
    else
        return Error::format("drive: format must be \"raw\" or \"qcow2\", got '{}'", format);
    if (auto limit = TRY(optional_rate_limiter(fields, "rate_limiter")))
        disk.rate_limit = *limit;
    return disk;
}

Expected<std::string> parse_drive_cache_type(json const& body) {
    auto fields = TRY(drive_fields(body));
    auto cache = TRY(fields.string("cache_type")).value_or("Unsafe");
    if (cache != "Unsafe" && cache != "Writeback")
        return Error::format("drive: cache_type must be \"Unsafe\" or \"Writeback\", got '{}'", cache);
    return cache;
}

Expected<DriveUpdate> parse_drive_update(json const& body, std::string_view path_id) {
    auto fields = TRY(JsonFields::create(body, "drive", { "drive_id", "path_on_host", "rate_limiter" }));
    DriveUpdate update;
    update.drive_id = TRY(checked_body_id(fields, "drive_id", path_id));
    update.path = TRY(optional_path_field(fields, "path_on_host"));
    update.rate_limit = TRY(optional_rate_limit_changes(fields, "rate_limiter"));
    // Firecracker treats a PATCH with neither field as an update of a vhost-user drive, which a
    // virtio-block drive refuses with 400 (rpc_interface.rs, update_block_device).
    if (!update.path && !update.rate_limit)
        return Error::format("drive: PATCH /drives/{} changes nothing: give path_on_host or rate_limiter",
                             update.drive_id);
    return update;
}

Expected<NetConfig> parse_network_interface(json const& body, std::string_view path_id, ConfigDialect dialect) {
    auto fields = TRY(
        JsonFields::create(body, "network-interface",
                           { "iface_id", "host_dev_name", "guest_mac", "rx_rate_limiter", "tx_rate_limiter", "mtu" }));
    if (fields.has("mtu"))
        return Error("network-interface: mtu is not supported by kvmm (VIRTIO_NET_F_MTU is not offered)");
    NetConfig net;
    net.id = TRY(checked_body_id(fields, "iface_id", path_id, dialect));
    net.tap_name = TRY(path_field(fields, "host_dev_name"));
    if (net.tap_name.size() > MAX_TAP_NAME_LENGTH)
        return Error::format("network-interface: host_dev_name '{}' is longer than {} bytes", net.tap_name,
                             MAX_TAP_NAME_LENGTH);
    if (auto mac = TRY(fields.string("guest_mac")))
        net.mac = TRY(parse_guest_mac(*mac));
    if (auto rx = TRY(optional_rate_limiter(fields, "rx_rate_limiter")))
        net.rx_rate_limit = *rx;
    if (auto tx = TRY(optional_rate_limiter(fields, "tx_rate_limiter")))
        net.tx_rate_limit = *tx;
    return net;
}

Expected<NetworkInterfaceUpdate> parse_network_interface_update(json const& body, std::string_view path_id) {
    auto fields =
        TRY(JsonFields::create(body, "network-interface", { "iface_id", "rx_rate_limiter", "tx_rate_limiter" }));
    NetworkInterfaceUpdate update;
    update.iface_id = TRY(checked_body_id(fields, "iface_id", path_id));
    update.rx_rate_limit = TRY(optional_rate_limit_changes(fields, "rx_rate_limiter"));
    update.tx_rate_limit = TRY(optional_rate_limit_changes(fields, "tx_rate_limiter"));
    return update;
}

Expected<VsockConfig> parse_vsock(json const& body) {
    auto fields = TRY(JsonFields::create(body, "vsock", { "guest_cid", "uds_path", "vsock_id" }));
    TRY(fields.string("vsock_id")); // deprecated by Firecracker; accepted and ignored
    VsockConfig vsock;
    uint64_t cid = TRY(fields.required_unsigned_integer("guest_cid", MAX_GUEST_CID));
    if (cid < MIN_GUEST_CID)
        return Error::format("vsock: guest_cid must be at least {} (0 to 2 are reserved), got {}", MIN_GUEST_CID, cid);
    vsock.guest_cid = static_cast<uint32_t>(cid);
    vsock.uds_path = TRY(path_field(fields, "uds_path"));
    return vsock;
}

Expected<RngConfig> parse_entropy(json const& body) {
    auto fields = TRY(JsonFields::create(body, "entropy", { "rate_limiter" }));
    RngConfig rng;
    if (auto limit = TRY(optional_rate_limiter(fields, "rate_limiter")))
        rng.rate_limit = *limit;
    return rng;
}

Expected<BalloonConfig> parse_balloon(json const& body) {
    auto fields = TRY(JsonFields::create(body, "balloon",
                                         { "amount_mib", "deflate_on_oom", "stats_polling_interval_s",
                                           "free_page_reporting", "free_page_hinting" }));
    if (TRY(fields.boolean("free_page_hinting")).value_or(false))
        return Error("balloon: free_page_hinting is not supported by kvmm");
    BalloonConfig balloon;
    balloon.target_mib = TRY(fields.required_unsigned_integer("amount_mib", UINT64_MAX >> 20));
    balloon.deflate_on_oom = TRY(fields.required_boolean("deflate_on_oom"));
    balloon.stats_polling_interval_s =
        static_cast<uint32_t>(TRY(fields.unsigned_integer("stats_polling_interval_s", UINT32_MAX)).value_or(0));
    balloon.free_page_reporting = TRY(fields.boolean("free_page_reporting")).value_or(false);
    return balloon;
}

Expected<uint64_t> parse_balloon_update(json const& body) {
    auto fields = TRY(JsonFields::create(body, "balloon", { "amount_mib" }));
    return TRY(fields.required_unsigned_integer("amount_mib", UINT64_MAX >> 20));
}

Expected<uint32_t> parse_balloon_statistics_update(json const& body) {
    auto fields = TRY(JsonFields::create(body, "balloon statistics", { "stats_polling_interval_s" }));
    return static_cast<uint32_t>(TRY(fields.required_unsigned_integer("stats_polling_interval_s", UINT32_MAX)));
}

Expected<LoggerConfig> parse_logger(json const& body) {
    auto fields =
        TRY(JsonFields::create(body, "logger", { "log_path", "level", "show_level", "show_log_origin", "module" }));
    LoggerConfig logger;
    logger.log_path = TRY(optional_path_field(fields, "log_path"));
    if (auto level = TRY(fields.string("level")))
        logger.level = TRY(canonical_level(*level));
    logger.show_level = TRY(fields.boolean("show_level")).value_or(false);
    logger.show_log_origin = TRY(fields.boolean("show_log_origin")).value_or(false);
    logger.module = TRY(fields.string("module"));
    return logger;
}

Expected<MetricsConfig> parse_metrics(json const& body) {
    auto fields = TRY(JsonFields::create(body, "metrics", { "metrics_path" }));
    return MetricsConfig { TRY(path_field(fields, "metrics_path")) };
}

Expected<InstanceAction> parse_action(json const& body) {
    auto fields = TRY(JsonFields::create(body, "action", { "action_type" }));
    std::string type = TRY(fields.required_string("action_type"));
    if (type == "InstanceStart")
        return InstanceAction::InstanceStart;
    if (type == "SendCtrlAltDel")
        return InstanceAction::SendCtrlAltDel;
    if (type == "FlushMetrics")
        return InstanceAction::FlushMetrics;
    return Error::format("action: action_type must be InstanceStart, SendCtrlAltDel or FlushMetrics, got '{}'", type);
}

Expected<bool> parse_vm_state_is_paused(json const& body) {
    auto fields = TRY(JsonFields::create(body, "vm", { "state" }));
    std::string state = TRY(fields.required_string("state"));
    if (state == "Paused")
        return true;
    if (state == "Resumed")
        return false;
    return Error::format("vm: state must be \"Paused\" or \"Resumed\", got '{}'", state);
}

json rate_limiter_to_json(RateLimitConfig const& limit) {
    auto bucket = [](TokenBucketConfig const& b) {
        // Firecracker reports a bucket without a burst (0 or not given) as null (its
        // TokenBucketConfig::from(&TokenBucket)), and the burst it was given otherwise.
        return json { { "size", b.size },
                      { "one_time_burst", b.one_time_burst == 0 ? json(nullptr) : json(b.one_time_burst) },
                      { "refill_time", b.refill_time_ms } };
    };
    json out = json::object();
    if (limit.bandwidth)
        out["bandwidth"] = bucket(*limit.bandwidth);
    if (limit.ops)
        out["ops"] = bucket(*limit.ops);
    return out;
}

json machine_config_to_json(VmConfig const& vm, MachineOptions const& machine) {
    static constexpr std::string_view HUGE_PAGES[] = { "None", "Transparent", "2M" };
    return json { { "vcpu_count", vm.vcpu_count },
                  { "mem_size_mib", vm.memory_size >> 20 },
                  { "smt", machine.smt },
                  { "track_dirty_pages", machine.track_dirty_pages },
                  { "huge_pages", HUGE_PAGES[static_cast<size_t>(machine.huge_pages)] } };
}

json boot_source_to_json(VmConfig const& vm) {
    json out { { "kernel_image_path", vm.kernel_path }, { "boot_args", vm.cmdline } };
    if (vm.initrd_path)
        out["initrd_path"] = *vm.initrd_path;
    return out;
}

json drive_to_json(DiskConfig const& disk, std::string_view cache_type) {
    json out { { "drive_id", disk.id },
               { "path_on_host", disk.path },
               { "is_root_device", disk.is_root_device },
               { "is_read_only", disk.read_only },
               { "cache_type", cache_type },
               { "io_engine", disk.engine == DiskConfig::Engine::Sync ? "Sync" : "Async" } };
    if (disk.format == DiskConfig::Format::Qcow2)
        out["format"] = "qcow2"; // a kvmm extension: absent for raw, as Firecracker's clients expect
    if (!disk.rate_limit.empty())
        out["rate_limiter"] = rate_limiter_to_json(disk.rate_limit);
    return out;
}

json network_interface_to_json(NetConfig const& net) {
    json out { { "iface_id", net.id }, { "host_dev_name", net.tap_name } };
    if (net.mac)
        out["guest_mac"] = format_mac_address(*net.mac);
    if (!net.rx_rate_limit.empty())
        out["rx_rate_limiter"] = rate_limiter_to_json(net.rx_rate_limit);
    if (!net.tx_rate_limit.empty())
        out["tx_rate_limiter"] = rate_limiter_to_json(net.tx_rate_limit);
    return out;
}

json vsock_to_json(VsockConfig const& vsock) {
    return json { { "guest_cid", vsock.guest_cid }, { "uds_path", vsock.uds_path } };
}

json entropy_to_json(RngConfig const& rng) {
    json out = json::object();
    if (!rng.rate_limit.empty())
        out["rate_limiter"] = rate_limiter_to_json(rng.rate_limit);
    return out;
}

json balloon_to_json(BalloonConfig const& balloon) {
    return json { { "amount_mib", balloon.target_mib },
                  { "deflate_on_oom", balloon.deflate_on_oom },
                  { "stats_polling_interval_s", balloon.stats_polling_interval_s },
                  { "free_page_reporting", balloon.free_page_reporting } };
}

json logger_to_json(LoggerConfig const& logger) {
    json out { { "level", logger.level },
               { "show_level", logger.show_level },
               { "show_log_origin", logger.show_log_origin } };
    if (logger.log_path)
        out["log_path"] = *logger.log_path;
    if (logger.module)
        out["module"] = *logger.module;
    return out;
}

json metrics_to_json(MetricsConfig const& metrics) { return json { { "metrics_path", metrics.metrics_path } }; }

} // namespace kvmm

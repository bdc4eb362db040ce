#include "api/firecracker_api.h"

#include "api/host_checks.h"
#include "api/json_fields.h"
#include "api/resource_parsers.h"
#include "base/path.h"
#include "base/storage_file_policy.h"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

namespace kvmm {
namespace {

using nlohmann::json;

// Firecracker features kvmm does not implement, answered with a reason instead of the generic
// "invalid path" so that a client sees why.
struct UnsupportedEndpoint {
    std::string_view prefix;
    std::string_view reason;
};
constexpr UnsupportedEndpoint UNSUPPORTED_ENDPOINTS[] = {
    { "/mmds", "the microVM metadata service (MMDS) is not supported by kvmm" },
    { "/cpu-config", "CPU templates and custom CPU configuration are not supported by kvmm" },
    { "/hotplug", "hot-plugging is not supported by kvmm" },
    { "/memory-hotplug", "memory hot-plugging is not supported by kvmm" },
    { "/pmem", "virtio-pmem devices are not supported by kvmm" },
    { "/balloon/hinting", "balloon free page hinting is not supported by kvmm" },
    { "/serial", "serial output redirection through the API is not supported by kvmm" },
};

HttpResponse ok_json(json const& body) {
    return HttpResponse::json(200, body.dump(-1, ' ', false, json::error_handler_t::replace));
}

Error invalid_path(std::string_view method, std::string_view path) {
    return Error::format("Invalid request method and/or path: {} {}", method, path);
}

// The resources that configure the microVM before it starts; once one of them is set, a snapshot
// can no longer be loaded (Firecracker: only logger and metrics may come before a load).
bool configures_boot_resource(std::string_view path) {
    for (std::string_view prefix :
         { "/boot-source", "/machine-config", "/drives/", "/network-interfaces/", "/vsock", "/entropy", "/balloon" }) {
        if (path.substr(0, prefix.size()) == prefix)
            return true;
    }
    return false;
}

Expected<std::string> snapshot_path_field(JsonFields const& fields, std::string_view key) {
    auto value = TRY(fields.required_string(key));
    if (value.empty())
        return Error::format("{}: {} must not be empty", fields.what(), key);
    TRY(check_path_characters(value, fmt::format("{}.{}", fields.what(), key)));
    return value;
}

struct SnapshotCreateBody {
    std::string snapshot_path;
    std::string mem_file_path;
    SnapshotCreateType type { SnapshotCreateType::Full };
};

// Firecracker's SnapshotCreateParams (v1.12: snapshot_type Full by default, or Diff).
Expected<SnapshotCreateBody> parse_snapshot_create(json const& body) {
    auto fields =
        TRY(JsonFields::create(body, "snapshot/create", { "snapshot_type", "snapshot_path", "mem_file_path" }));
    auto const type = TRY(fields.string("snapshot_type")).value_or("Full");
    if (type != "Full" && type != "Diff")
        return Error::format("snapshot/create: snapshot_type must be \"Full\" or \"Diff\", got '{}'", type);
    SnapshotCreateBody parsed;
    parsed.type = type == "Diff" ? SnapshotCreateType::Diff : SnapshotCreateType::Full;
    parsed.snapshot_path = TRY(snapshot_path_field(fields, "snapshot_path"));
    parsed.mem_file_path = TRY(snapshot_path_field(fields, "mem_file_path"));
    if (parsed.snapshot_path == parsed.mem_file_path)
        return Error("snapshot/create: snapshot_path and mem_file_path must be different files");
    return parsed;
}

struct SnapshotLoadBody {
    SnapshotLoadRequest request;
    bool track_dirty_pages { false };
    std::vector<std::pair<std::string, std::string>> network_overrides; // iface_id, host_dev_name
    bool deprecated_mem_file_path { false };
};

// Firecracker's SnapshotLoadParams (v1.12): exactly one of mem_backend and the deprecated
// mem_file_path; dirty page tracking for the loaded microVM with track_dirty_pages or its
// deprecated older name enable_diff_snapshots (either true turns it on).
Expected<SnapshotLoadBody> parse_snapshot_load(json const& body) {
    auto fields = TRY(JsonFields::create(body, "snapshot/load",
                                         { "snapshot_path", "mem_file_path", "mem_backend", "enable_diff_snapshots",
                                           "track_dirty_pages", "resume_vm", "network_overrides" }));
    SnapshotLoadBody parsed;
    parsed.request.snapshot_path = TRY(snapshot_path_field(fields, "snapshot_path"));
    auto const* backend = fields.get("mem_backend");
    bool const has_file_path = fields.get("mem_file_path") != nullptr;
    if (backend && has_file_path)
        return Error("snapshot/load: too many fields: either `mem_backend` or `mem_file_path` exclusively is required");
    if (!backend && !has_file_path)
        return Error("snapshot/load: missing field: either `mem_backend` or `mem_file_path` is required");
    if (backend) {
        auto backend_fields =
            TRY(JsonFields::create(*backend, "snapshot/load.mem_backend", { "backend_type", "backend_path" }));
        auto const type = TRY(backend_fields.required_string("backend_type"));
        if (type == "Uffd")
            return Error("snapshot/load: mem_backend backend_type Uffd is not supported yet; use File");
        if (type != "File")
            return Error::format("snapshot/load: mem_backend backend_type must be \"File\" or \"Uffd\", got '{}'",
                                 type);
        parsed.request.memory_file_path = TRY(snapshot_path_field(backend_fields, "backend_path"));
    } else {
        parsed.request.memory_file_path = TRY(snapshot_path_field(fields, "mem_file_path"));
        parsed.deprecated_mem_file_path = true;
    }
    for (std::string_view key : { "enable_diff_snapshots", "track_dirty_pages" }) {
        if (TRY(fields.boolean(key)).value_or(false))
            parsed.track_dirty_pages = true;
    }
    parsed.request.resume_vm = TRY(fields.boolean("resume_vm")).value_or(false);
    if (auto const* overrides = fields.get("network_overrides")) {
        if (!overrides->is_array())
            return Error::format("snapshot/load: network_overrides must be an array, got {}", overrides->type_name());
        for (auto const& item : *overrides) {
            auto override_fields =
                TRY(JsonFields::create(item, "snapshot/load.network_overrides", { "iface_id", "host_dev_name" }));
            auto iface = TRY(override_fields.required_string("iface_id"));
            auto device = TRY(snapshot_path_field(override_fields, "host_dev_name"));
            parsed.network_overrides.emplace_back(std::move(iface), std::move(device));
        }
    }
    return parsed;
}

// Splits "/drives/rootfs" into "drives" and "rootfs".
std::pair<std::string_view, std::string_view> split_resource(std::string_view path) {
    path.remove_prefix(1);
    size_t slash = path.find('/');
    if (slash == std::string_view::npos)
        return { path, {} };
    return { path.substr(0, slash), path.substr(slash + 1) };
}

} // namespace

Expected<UniqueFd> open_observability_sink(std::string const& path, SinkCreation creation) {
    // O_RDWR: a FIFO opened for writing only would need a reader already (ENXIO without one);
    // holding both ends, as Firecracker does, lets the reader come later and read what was
    // written meanwhile. O_NONBLOCK: a full pipe drops output instead of stalling the VMM.
    int flags = O_RDWR | O_APPEND | O_NONBLOCK | O_CLOEXEC;
    if (creation == SinkCreation::CreateIfMissing)
        flags |= O_CREAT;
    UniqueFd fd(::open(path.c_str(), flags, 0600));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot open '{}'", path));
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("cannot stat '{}'", path));
    if (!S_ISREG(status.st_mode) && !S_ISFIFO(status.st_mode))
        return Error::format("'{}' is neither a regular file nor a FIFO", path);
    return fd;
}

FirecrackerApi::FirecrackerApi(VmmController& controller, ApiIdentity identity, HostChecks host_checks)
    : m_controller(controller), m_identity(std::move(identity)), m_host_checks(host_checks) {}

HttpResponse FirecrackerApi::handle(HttpRequest const& request) {
    m_deprecation.reset();
    auto result = route(request.method, request.path(), request.body);
    if (result && !m_started && request.method != "GET" && configures_boot_resource(request.path()))
        m_configured = true;
    HttpResponse response = result ? std::move(result.value()) : HttpResponse::fault(400, result.error().message());
    // As Firecracker: the header goes with whatever the request's outcome was.
    if (m_deprecation) {
        spdlog::warn("{}", *m_deprecation);
        response.headers.emplace_back("Deprecation", "true");
    }
    return response;
}

void FirecrackerApi::note_deprecation(std::string message) { m_deprecation = std::move(message); }

Expected<void> FirecrackerApi::require_not_started(std::string_view resource) const {
    if (m_started)
        return Error::format("{} cannot be changed after the microVM has started", resource);
    return {};
}

Expected<void> FirecrackerApi::require_started(std::string_view operation) const {
    if (!m_started)
        return Error::format("{} is only available after the microVM has started", operation);
    return {};
}

Expected<HttpResponse> FirecrackerApi::route(std::string_view method, std::string_view path, std::string_view body) {
    for (auto const& endpoint : UNSUPPORTED_ENDPOINTS) {
        if (path.substr(0, endpoint.prefix.size()) == endpoint.prefix &&
            (path.size() == endpoint.prefix.size() || path[endpoint.prefix.size()] == '/'))
            return Error::format("{} {}: {}", method, path, endpoint.reason);
    }
    bool const get = method == "GET", put = method == "PUT", patch = method == "PATCH";
    // Firecracker's parser refuses a GET that carries a body (parsed_request.rs, method_to_error).
    if (get && !body.empty())
        return Error("GET request cannot have a body.");
    auto [resource, sub_path] = split_resource(path);
    // Parses the body only for the methods that carry one.
    auto body_json = [&]() { return parse_json_text(body); };

    if (path == "/" && get) {
        return ok_json({ { "id", m_identity.instance_id },
                         { "state", instance_state_name(m_controller.state()) },
                         { "vmm_version", m_identity.vmm_version },
                         { "app_name", "kvmm" } });
    }
    if (path == "/version" && get)
        return ok_json(
            { { "firecracker_version", FIRECRACKER_API_VERSION }, { "kvmm_version", m_identity.vmm_version } });
    if (path == "/vm/config" && get)
        return ok_json(microvm_config_to_json(m_config));
    if (path == "/machine-config") {
        if (get)
            return ok_json(machine_config_to_json(m_config.instance.vm, m_config.instance.machine));
        if (put || patch) {
            TRY(require_not_started("machine-config"));
            json parsed = TRY(body_json());
            if (parsed.is_object() && parsed.contains("cpu_template"))
                note_deprecation(fmt::format("{} /machine-config: cpu_template field is deprecated.", method));
            TRY(apply_machine_config(parsed, patch, m_config.instance.vm, m_config.instance.machine));
            return HttpResponse::no_content();
        }
    }
    if (path == "/boot-source" && put)
        return put_boot_source(body);
    if (resource == "drives" && !sub_path.empty() && (put || patch))
        return handle_drive(method, sub_path, body);
    if (resource == "network-interfaces" && !sub_path.empty() && (put || patch))
        return handle_network_interface(method, sub_path, body);
    if (path == "/vsock" && put)
        return put_vsock(body);
    if (path == "/entropy" && put) {
        TRY(require_not_started("entropy"));
        json parsed = TRY(body_json());
        m_config.instance.vm.rng = TRY(parse_entropy(parsed));
        return HttpResponse::no_content();
    }
    if (resource == "balloon")
        return handle_balloon(method, sub_path, body);
    if (path == "/logger" && put) {
        TRY(require_not_started("logger"));
        json parsed = TRY(body_json());
        LoggerConfig logger = TRY(parse_logger(parsed));
        TRY(install_logger(logger));
        return HttpResponse::no_content();
    }
    if (path == "/metrics" && put) {
        TRY(require_not_started("metrics"));
        json parsed = TRY(body_json());
        MetricsConfig metrics = TRY(parse_metrics(parsed));
        TRY(install_metrics(metrics));
        return HttpResponse::no_content();
    }
    if (path == "/vm" && patch) {
        json parsed = TRY(body_json());
        bool paused = TRY(parse_vm_state_is_paused(parsed));
        TRY(require_started(paused ? "pausing" : "resuming"));
        TRY(paused ? m_controller.pause() : m_controller.resume());
        return HttpResponse::no_content();
    }
    if (path == "/actions" && put)
        return handle_action(body);
    if (path == "/snapshot/create" && put)
        return create_snapshot(body);
    if (path == "/snapshot/load" && put)
        return load_snapshot(body);
    return invalid_path(method, path);
}

// The files are opened now, so that a wrong path is this request's 400 and the previous boot
// source stays (Firecracker opens them while handling the PUT: vmm_config/boot_source.rs).
Expected<HttpResponse> FirecrackerApi::put_boot_source(std::string_view body) {
    TRY(require_not_started("boot-source"));
    json parsed = TRY(parse_json_text(body));
    VmConfig candidate;
    TRY(apply_boot_source(parsed, candidate));
    if (m_host_checks == HostChecks::Perform)
        TRY(check_boot_files(candidate));
    auto& vm = m_config.instance.vm;
    vm.kernel_path = std::move(candidate.kernel_path);
    vm.initrd_path = std::move(candidate.initrd_path);
    vm.cmdline = std::move(candidate.cmdline);
    return HttpResponse::no_content();
}

Expected<HttpResponse> FirecrackerApi::put_vsock(std::string_view body) {
    TRY(require_not_started("vsock"));
    json parsed = TRY(parse_json_text(body));
    if (parsed.is_object() && parsed.contains("vsock_id"))
        note_deprecation("PUT /vsock: vsock_id field is deprecated.");
    VsockConfig vsock = TRY(parse_vsock(parsed));
    if (m_host_checks == HostChecks::Perform)
        TRY(check_vsock_directory(vsock));
    m_config.instance.vm.vsock = std::move(vsock);
    return HttpResponse::no_content();
}

Expected<HttpResponse> FirecrackerApi::handle_drive(std::string_view method, std::string_view id,
                                                    std::string_view body) {
    TRY(validate_resource_id(id, "drive path"));
    json parsed = TRY(parse_json_text(body));
    if (method == "PUT") {
        TRY(require_not_started("drives"));
        DiskConfig disk = TRY(parse_drive(parsed, id));
        std::string cache_type = TRY(parse_drive_cache_type(parsed));
        if (m_host_checks == HostChecks::Perform)
            TRY(check_drive_file(disk));
        TRY(put_drive(m_config, std::move(disk), std::move(cache_type)));
        return HttpResponse::no_content();
    }
    TRY(require_started("PATCH /drives"));
    DriveUpdate update = TRY(parse_drive_update(parsed, id));
    auto& disks = m_config.instance.vm.disks;
    auto disk = std::find_if(disks.begin(), disks.end(), [&](DiskConfig const& d) { return d.id == id; });
    if (disk == disks.end())
        return Error::format("drive '{}' does not exist", id);
    // The machine opens the new image and checks it again (DiskImage); refusing a kernel file
    // here keeps it from ever being opened on a client's word.
    if (update.path && m_host_checks == HostChecks::Perform)
        TRY(check_storage_path(*update.path, fmt::format("drive '{}': image", id)));
    TRY(m_controller.update_drive(update.drive_id, update.path, update.rate_limit));
    if (update.path)
        disk->path = *update.path;
    if (update.rate_limit)
        disk->rate_limit = apply_rate_limit_changes(disk->rate_limit, *update.rate_limit);
    return HttpResponse::no_content();
}

Expected<HttpResponse> FirecrackerApi::handle_network_interface(std::string_view method, std::string_view id,
                                                                std::string_view body) {
    TRY(validate_resource_id(id, "network-interface path"));
    json parsed = TRY(parse_json_text(body));
    if (method == "PUT") {
        TRY(require_not_started("network-interfaces"));
        NetConfig net = TRY(parse_network_interface(parsed, id));
        TRY(put_network_interface(m_config, std::move(net)));
        return HttpResponse::no_content();
    }
    TRY(require_started("PATCH /network-interfaces"));
    NetworkInterfaceUpdate update = TRY(parse_network_interface_update(parsed, id));
    auto& nets = m_config.instance.vm.nets;
    auto net = std::find_if(nets.begin(), nets.end(), [&](NetConfig const& n) { return n.id == id; });
    if (net == nets.end())
        return Error::format("network interface '{}' does not exist", id);
    TRY(m_controller.update_network_rate_limits(update.iface_id, update.rx_rate_limit, update.tx_rate_limit));
    if (update.rx_rate_limit)
        net->rx_rate_limit = apply_rate_limit_changes(net->rx_rate_limit, *update.rx_rate_limit);
    if (update.tx_rate_limit)
        net->tx_rate_limit = apply_rate_limit_changes(net->tx_rate_limit, *update.tx_rate_limit);
    return HttpResponse::no_content();
}

Expected<HttpResponse> FirecrackerApi::handle_balloon(std::string_view method, std::string_view sub_path,
                                                      std::string_view body) {
    auto& balloon = m_config.instance.vm.balloon;
    if (sub_path.empty() && method == "PUT") {
        TRY(require_not_started("balloon"));
        json parsed = TRY(parse_json_text(body));
        BalloonConfig requested = TRY(parse_balloon(parsed));
        TRY(check_balloon_fits(requested.target_mib, m_config.instance.vm.memory_size >> 20).with_context("balloon"));
        balloon = requested;
        return HttpResponse::no_content();
    }
    bool const known = (sub_path.empty() && (method == "GET" || method == "PATCH")) ||
                       (sub_path == "statistics" && (method == "GET" || method == "PATCH"));
    if (!known)
        return invalid_path(method, sub_path.empty() ? "/balloon" : fmt::format("/balloon/{}", sub_path));
    // Firecracker answers the balloon's updates and statistics only once the microVM runs
    // (rpc_interface.rs: OperationNotSupportedPreBoot); its configuration is readable before.
    if (method == "PATCH" || sub_path == "statistics")
        TRY(require_started(fmt::format("{} /balloon{}", method, sub_path.empty() ? "" : "/statistics")));
    if (!balloon)
        return Error("no balloon device is configured");
    if (sub_path.empty() && method == "GET")
        return ok_json(balloon_to_json(*balloon));
    if (sub_path.empty()) { // PATCH /balloon
        json parsed = TRY(parse_json_text(body));
        uint64_t target = TRY(parse_balloon_update(parsed));
        TRY(check_balloon_fits(target, m_config.instance.vm.memory_size >> 20).with_context("balloon"));
        TRY(m_controller.update_balloon(target));
        balloon->target_mib = target;
        return HttpResponse::no_content();
    }
    if (method == "GET") {
        if (balloon->stats_polling_interval_s == 0)
            return Error("balloon statistics are not enabled (stats_polling_interval_s is 0)");
        return ok_json(TRY(m_controller.balloon_statistics()));
    }
    json parsed = TRY(parse_json_text(body));
    uint32_t interval = TRY(parse_balloon_statistics_update(parsed));
    // The statistics virtqueue exists only if enabled at boot (virtio 1.2 section 5.5.3).
    if ((interval == 0) != (balloon->stats_polling_interval_s == 0))
        return Error("balloon statistics cannot be enabled or disabled after the microVM has started");
    TRY(m_controller.update_balloon_statistics_interval(interval));
    balloon->stats_polling_interval_s = interval;
    return HttpResponse::no_content();
}

Expected<HttpResponse> FirecrackerApi::handle_action(std::string_view body) {
    json parsed = TRY(parse_json_text(body));
    InstanceAction action = TRY(parse_action(parsed));
    switch (action) {
    case InstanceAction::InstanceStart:
        TRY(start());
        break;
    case InstanceAction::SendCtrlAltDel:
        TRY(require_started("SendCtrlAltDel"));
        TRY(m_controller.send_ctrl_alt_del());
        break;
    case InstanceAction::FlushMetrics:
        // Firecracker flushes metrics only once the microVM runs (rpc_interface.rs).
        TRY(require_started("FlushMetrics"));
        if (!m_config.metrics)
            return Error("FlushMetrics: no metrics destination is configured (PUT /metrics)");
        TRY(m_controller.flush_metrics());
        break;
    }
    return HttpResponse::no_content();
}

Expected<HttpResponse> FirecrackerApi::create_snapshot(std::string_view body) {
    TRY(require_started("PUT /snapshot/create"));
    json const document = TRY(parse_json_text(body));
    auto const parsed = TRY(parse_snapshot_create(document));
    if (m_controller.state() != InstanceState::Paused)
        return Error("snapshot/create: the microVM must be paused first (PATCH /vm {\"state\": \"Paused\"})");
    // Firecracker's rule (vmm/src/persist.rs): a diff needs the dirty page record.
    if (parsed.type == SnapshotCreateType::Diff && !m_config.instance.machine.track_dirty_pages)
        return Error("snapshot/create: a Diff snapshot needs dirty page tracking: set track_dirty_pages in "
                     "machine-config before InstanceStart, or in snapshot/load");
    // The configuration a load needs to build the same machine; the logger and metrics belong
    // to this process, not to the machine.
    MicrovmConfig machine = m_config;
    machine.logger.reset();
    machine.metrics.reset();
    TRY(m_controller.create_snapshot(parsed.snapshot_path, parsed.mem_file_path, microvm_config_to_json(machine).dump(),
                                     parsed.type));
    return HttpResponse::no_content();
}

Expected<HttpResponse> FirecrackerApi::load_snapshot(std::string_view body) {
    if (m_started)
        return Error("snapshot/load: the microVM has already started; load a snapshot in a fresh kvmm");
    if (m_configured)
        return Error("Loading a microVM snapshot not allowed after configuring boot-specific resources.");
    json const document = TRY(parse_json_text(body));
    auto const parsed = TRY(parse_snapshot_load(document));
    if (parsed.deprecated_mem_file_path)
        note_deprecation("PUT /snapshot/load: mem_file_path field is deprecated.");
    // The snapshot's own configuration becomes this API's, with the TAPs the request names.
    std::optional<MicrovmConfig> loaded;
    auto configure = [&](std::string const& config_json) -> Expected<InstanceConfig> {
        auto config = TRY(load_config_file(config_json).with_context("the snapshot's configuration"));
        config.logger.reset();
        config.metrics.reset();
        // The load decides, not the snapshotted machine (Firecracker's track_dirty_pages).
        config.instance.machine.track_dirty_pages = parsed.track_dirty_pages;
        for (auto const& [iface_id, host_dev_name] : parsed.network_overrides) {
            auto& nets = config.instance.vm.nets;
            // Named again: clang before 16 cannot capture a structured binding in a lambda.
            std::string const& wanted = iface_id;
            auto net = std::find_if(nets.begin(), nets.end(), [&](NetConfig const& n) { return n.id == wanted; });
            if (net == nets.end())
                return Error::format("snapshot/load: network_overrides: the snapshot has no network interface '{}'",
                                     iface_id);
            net->tap_name = host_dev_name;
            net->tap_fd.reset();
        }
        loaded = config;
        return config.instance;
    };
    TRY(m_controller.load_snapshot(parsed.request, configure));
    // The logger and metrics set before the load stay this process's.
    loaded->logger = m_config.logger;
    loaded->metrics = m_config.metrics;
    m_config = std::move(*loaded);
    m_started = true;
    return HttpResponse::no_content();
}

Expected<void> FirecrackerApi::install_logger(LoggerConfig const& logger) {
    UniqueFd sink;
    if (logger.log_path)
        sink = TRY(open_observability_sink(*logger.log_path, SinkCreation::MustExist).with_context("logger"));
    TRY(m_controller.set_logger(logger, std::move(sink)));
    m_config.logger = logger;
    return {};
}

Expected<void> FirecrackerApi::install_metrics(MetricsConfig const& metrics, SinkCreation creation) {
    UniqueFd sink = TRY(open_observability_sink(metrics.metrics_path, creation).with_context("metrics"));
    TRY(m_controller.set_metrics(metrics, std::move(sink)));
    m_config.metrics = metrics;
    return {};
}

Expected<void> FirecrackerApi::start() {
    if (m_started)
        return Error("InstanceStart: the microVM has already started");
    if (m_config.instance.vm.kernel_path.empty())
        return Error("InstanceStart: no boot source is configured (PUT /boot-source with kernel_image_path)");
    TRY(m_controller.start_instance(m_config.instance));
    m_started = true;
    return {};
}

void FirecrackerApi::mark_started(InstanceConfig config) {
    m_config.instance = std::move(config);
    m_started = true;
}

Expected<void> FirecrackerApi::boot_from_config(MicrovmConfig config) {
    TRY(require_not_started("the configuration"));
    auto logger = config.logger;
    auto metrics = config.metrics;
    m_config = std::move(config);
    m_config.logger.reset();
    m_config.metrics.reset();
    // The checks a PUT of each resource makes, so that the config file fails as early.
    if (m_host_checks == HostChecks::Perform) {
        TRY(check_boot_files(m_config.instance.vm));
        for (auto const& disk : m_config.instance.vm.disks)
            TRY(check_drive_file(disk));
        if (m_config.instance.vm.vsock)
            TRY(check_vsock_directory(*m_config.instance.vm.vsock));
    }
    if (logger)
        TRY(install_logger(*logger));
    if (metrics)
        TRY(install_metrics(*metrics));
    return start();
}

} // namespace kvmm

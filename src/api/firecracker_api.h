// FirecrackerApi: the routes of Firecracker's REST API (src/firecracker/swagger/firecracker.yaml)
// on kvmm. It keeps the pre-boot MicrovmConfig, validates every body into kvmm's config types,
// hands the configuration to the VmmController on PUT /actions InstanceStart, and forwards
// post-boot operations (pause, resume, balloon, rate limits...) to it. Errors are 400 with
// {"fault_message": ...} naming the field and the problem, as Firecracker answers; docs/api.md
// lists the endpoints and where kvmm differs.
//
// Threading: not thread-safe. handle() runs on the ApiServer's thread; boot_from_config() must
// be called before the server starts (or on that same thread).
#pragma once

#include "api/api_handler.h"
#include "api/microvm_config.h"
#include "api/vmm_controller.h"
#include "base/expected.h"
#include "base/unique_fd.h"

#include <optional>
#include <string>
#include <string_view>

namespace kvmm {

enum class SinkCreation { MustExist, CreateIfMissing };

// The Firecracker API version whose endpoints kvmm follows (GET /version's firecracker_version).
inline constexpr std::string_view FIRECRACKER_API_VERSION = "1.12.0";

struct ApiIdentity {
    std::string instance_id { "anonymous-instance" }; // Firecracker's default --id
    std::string vmm_version;                          // kvmm's own version
};

class FirecrackerApi final : public ApiHandler {
public:
    // HostChecks::Skip is for the fuzzer, which must stay off the host's file system.
    enum class HostChecks { Perform, Skip };
    FirecrackerApi(VmmController& controller, ApiIdentity identity, HostChecks host_checks = HostChecks::Perform);

    HttpResponse handle(HttpRequest const& request) override;

    // --config-file: takes `config` as the pre-boot state, opens and installs its logger and
    // metrics sinks, then starts the microVM as InstanceStart would.
    Expected<void> boot_from_config(MicrovmConfig config);

    // Flag mode with --control-sock: the VM was configured from the command line and is being
    // built by the caller, so the API begins in the started state with `config` as its
    // configuration (GET /vm/config) and serves only post-boot requests.
    void mark_started(InstanceConfig config);
    // PUT /metrics without the request: opens the sink and installs it (--metrics-path; flag
    // mode's --metrics, which creates a missing file, passes CreateIfMissing).
    Expected<void> install_metrics(MetricsConfig const& metrics, SinkCreation creation = SinkCreation::MustExist);
    // PUT /logger without the request (--log-path and the other logger flags).
    Expected<void> install_logger(LoggerConfig const& logger);

    bool started() const { return m_started; }
    MicrovmConfig const& config() const { return m_config; }

private:
    Expected<HttpResponse> route(std::string_view method, std::string_view path, std::string_view body);
    Expected<HttpResponse> handle_balloon(std::string_view method, std::string_view sub_path, std::string_view body);
    Expected<HttpResponse> handle_drive(std::string_view method, std::string_view id, std::string_view body);
    Expected<HttpResponse> handle_network_interface(std::string_view method, std::string_view id,
                                                    std::string_view body);
    Expected<HttpResponse> handle_action(std::string_view body);
    Expected<HttpResponse> put_boot_source(std::string_view body);
    Expected<HttpResponse> put_vsock(std::string_view body);
    Expected<HttpResponse> create_snapshot(std::string_view body);
    Expected<HttpResponse> load_snapshot(std::string_view body);
    void note_deprecation(std::string message);
    Expected<void> start();
    Expected<void> require_not_started(std::string_view resource) const;
    Expected<void> require_started(std::string_view operation) const;

    VmmController& m_controller;
    ApiIdentity m_identity;
    HostChecks m_host_checks;
    MicrovmConfig m_config;
    bool m_started { false };
    // A boot resource (boot source, machine, devices) was configured: a snapshot can no longer
    // be loaded, as in Firecracker.
    bool m_configured { false };
    // Set while a request uses a field Firecracker deprecates; the response then carries
    // "Deprecation: true" as Firecracker's does (api_server/mod.rs, set_deprecation).
    std::optional<std::string> m_deprecation;
};

// Opens a log or metrics destination as Firecracker does (vmm_config/mod.rs open_file_nonblock,
// logger/logging.rs): read-write and non-blocking, so a FIFO opens whether or not a reader is
// there yet and a full pipe drops output instead of stalling the VMM; a path that does not
// exist is an error unless `creation` allows creating a regular file (mode 0600). Regular files
// are appended to.
Expected<UniqueFd> open_observability_sink(std::string const& path, SinkCreation creation = SinkCreation::MustExist);

} // namespace kvmm

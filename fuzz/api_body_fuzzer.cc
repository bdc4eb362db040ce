// libFuzzer target: API request bodies and the --config-file are untrusted JSON. The input is
// "METHOD PATH\n BODY"; it is routed through FirecrackerApi with a fake controller (whose
// state persists across inputs, so pre- and post-boot paths are both reached) and also loaded
// as a config file. Every answer must be a valid HTTP status with a JSON or empty body.
#include "api/fake_vmm_controller.h"
#include "api/firecracker_api.h"
#include "api/microvm_config.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    static kvmm::FakeVmmController controller;
    // Without the host checks: PUTs naming kernels, drives and sockets would open host files.
    static kvmm::FirecrackerApi api(controller, kvmm::ApiIdentity { "fuzz", "0" },
                                    kvmm::FirecrackerApi::HostChecks::Skip);
    std::string input(reinterpret_cast<char const*>(data), size);
    size_t newline = input.find('\n');
    size_t space = input.find(' ');
    kvmm::HttpRequest request;
    if (newline != std::string::npos && space < newline) {
        request.method = input.substr(0, space);
        request.target = "/" + input.substr(space + 1, newline - space - 1);
        request.body = input.substr(newline + 1);
    } else {
        request.method = "PUT";
        request.target = "/machine-config";
        request.body = input;
    }
    // PUT /logger and /metrics open the files at the path given; keep the fuzzer off the filesystem.
    if (request.path().starts_with("/logger") || request.path().starts_with("/metrics"))
        return 0;
    kvmm::HttpResponse response = api.handle(request);
    if (response.status < 200 || response.status > 599)
        std::abort();
    if (!response.body.empty() && !nlohmann::json::accept(response.body))
        std::abort();
    (void)kvmm::load_config_file(input); // parses only; opens nothing
    // kvmm's dialect (the machine files kvmmd writes) must hold whatever it is given as well.
    (void)kvmm::load_config_file(input, kvmm::ConfigDialect::Kvmm);
    return 0;
}

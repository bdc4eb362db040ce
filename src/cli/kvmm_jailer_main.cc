// kvmm-jailer: builds a jail for one VM and execs kvmm inside it, with Firecracker's jailer
// command line (src/jailer/jail.h has the steps, docs/jailer.md the layout and the flags).
#include "base/logging.h"
#include "jailer/jail.h"
#include "jailer/jailer_options.h"

#include <cstdio>
#include <string>
#include <vector>

// The build defines it (src/cli/CMakeLists.txt); a bare compile (the thread-safety check) does not.
#ifndef KVMM_VERSION
#define KVMM_VERSION "0.0.0"
#endif

int main(int argc, char** argv) {
    // The times kvmm gets, taken before any work (Firecracker measures from the jailer's start).
    auto const start = kvmm::jailer::current_times();
    kvmm::init_logging(spdlog::level::info);
    // Before anything is opened: no descriptor of the caller's may reach the jail.
    if (auto closed = kvmm::jailer::close_inherited_descriptors(); !closed) {
        spdlog::error("kvmm-jailer: {}", closed.error().message());
        return 1;
    }
    std::vector<std::string> arguments(argv + 1, argv + argc);
    auto parsed = kvmm::jailer::parse_command_line(arguments);
    if (!parsed) {
        std::fprintf(stderr, "kvmm-jailer: %s\n(kvmm-jailer --help lists the flags)\n",
                     parsed.error().message().c_str());
        return 2;
    }
    if (parsed->request == kvmm::jailer::JailerRequest::Help) {
        std::fputs(kvmm::jailer::usage().c_str(), stdout);
        return 0;
    }
    if (parsed->request == kvmm::jailer::JailerRequest::Version) {
        std::printf("kvmm-jailer %s\n", KVMM_VERSION);
        return 0;
    }
    auto const error = kvmm::jailer::run_jail(parsed->options, start);
    spdlog::error("kvmm-jailer: {}", error.message());
    return 1;
}

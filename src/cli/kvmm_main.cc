// kvmm: run one VM from command-line flags.
//
// Exit status: 0 when the guest powers off or resets, 1 for bad configuration
// (including a host without usable KVM), 2 when the guest dies (triple fault,
// KVM internal error) or kvmm cannot keep it running, 128+N on signal N.
#include "base/logging.h"
#include "vmm/machine.h"
#include "vmm/vm_config.h"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>

#ifndef KVMM_VERSION
#define KVMM_VERSION "0.0.0"
#endif

namespace {

constexpr int EXIT_BAD_CONFIGURATION = 1;

int fail(std::string const& message) {
    std::fprintf(stderr, "kvmm: error: %s\n", message.c_str());
    return EXIT_BAD_CONFIGURATION;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app { "kvmm - a KVM virtual machine monitor", "kvmm" };
    app.set_version_flag("--version", std::string("kvmm ") + KVMM_VERSION);

    kvmm::VmConfig config;
    std::string initrd;
    std::string memory = "128M";
    std::string console = "stdio";
    std::string log_level = "warn";
    bool huge_pages = false;
    app.add_option("--kernel", config.kernel_path, "Kernel: bzImage, or ELF vmlinux with a PVH entry note")->required();
    app.add_option("--initrd", initrd, "Initial ramdisk");
    app.add_option("--cmdline", config.cmdline, "Kernel command line");
    app.add_option("--cpus", config.vcpu_count, "Number of vCPUs")->default_val(1);
    app.add_option("--memory", memory, "Guest RAM, e.g. 512M, 4G (plain number: MiB)")->default_val("128M");
    app.add_option("--console", console, "Serial console: stdio, file=PATH or none")->default_val("stdio");
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")->default_val("warn");
    app.add_flag("--huge-pages", huge_pages, "Back guest RAM with transparent huge pages");

    try {
        app.parse(argc, argv);
    } catch (CLI::CallForHelp const& e) {
        return app.exit(e);
    } catch (CLI::CallForVersion const& e) {
        return app.exit(e);
    } catch (CLI::ParseError const& e) {
        return fail(e.what());
    }

    auto level = kvmm::parse_log_level(log_level);
    if (!level)
        return fail(level.error().message());
    kvmm::init_logging(*level);

    if (!initrd.empty())
        config.initrd_path = initrd;
    auto memory_size = kvmm::parse_memory_size(memory);
    if (!memory_size)
        return fail(memory_size.error().message());
    config.memory_size = *memory_size;
    auto console_config = kvmm::ConsoleConfig::parse(console);
    if (!console_config)
        return fail(console_config.error().message());
    config.console = *console_config;
    config.transparent_huge_pages = huge_pages;

    auto machine = kvmm::Machine::create(config);
    if (!machine)
        return fail(machine.error().message());
    spdlog::info("VM started: {} vCPUs, {} MiB", config.vcpu_count, config.memory_size >> 20);
    auto const reason = (*machine)->run();
    int const status = reason.exit_status();
    if (status == 0)
        spdlog::info("VM stopped: {} ({})", reason.cause_name(), reason.detail);
    else
        spdlog::error("VM stopped: {}: {}", reason.cause_name(), reason.detail);
    return status;
}

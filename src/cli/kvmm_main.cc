// kvmm: run one VM from command-line flags.
//
// Exit status: 0 when the guest powers off or resets, 1 for bad configuration
// (including a host without usable KVM), 2 when the guest dies (triple fault,
// KVM internal error) or kvmm cannot keep it running, 128+N on signal N.
#include "base/logging.h"
#include "vmm/device_options.h"
#include "vmm/machine.h"
#include "vmm/vm_config.h"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>
#include <vector>

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
    std::vector<std::string> disks;
    std::vector<std::string> nets;
    std::string vsock;
    std::string balloon;
    std::string rng;
    std::string console_device = "serial";
    app.add_option("--disk", disks,
                   "virtio-blk disk: path=FILE[,id=ID][,readonly=on][,cache=writeback|writethrough]"
                   "[,engine=io_uring|sync][,serial=S][,root=on][,bw=SIZE][,iops=N] (repeatable)");
    app.add_option("--net", nets, "virtio-net interface: tap=NAME|fd=N[,id=ID][,mac=MAC][,rx_bw=SIZE][,tx_bw=SIZE] (repeatable)");
    app.add_option("--vsock", vsock, "virtio-vsock: cid=N,uds=PATH (Firecracker's hybrid Unix socket)");
    app.add_option("--balloon", balloon, "virtio-balloon: size=SIZE[,deflate_on_oom=on][,stats=SECONDS][,free_page_reporting=on]");
    app.add_option("--rng", rng, "virtio entropy device; optional limit bw=SIZE (bytes per second)")
        ->expected(0, 1)
        ->default_str("on");
    app.add_option("--console-device", console_device, "Device for the console: serial (ttyS0) or virtio (hvc0)")
        ->default_val("serial");

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
    for (size_t i = 0; i < disks.size(); ++i) {
        auto disk = kvmm::parse_disk_option(disks[i], i);
        if (!disk)
            return fail(disk.error().message());
        config.disks.push_back(std::move(*disk));
    }
    for (size_t i = 0; i < nets.size(); ++i) {
        auto net = kvmm::parse_net_option(nets[i], i);
        if (!net)
            return fail(net.error().message());
        config.nets.push_back(std::move(*net));
    }
    if (app.count("--vsock")) {
        auto parsed = kvmm::parse_vsock_option(vsock);
        if (!parsed)
            return fail(parsed.error().message());
        config.vsock = *parsed;
    }
    if (app.count("--balloon")) {
        auto parsed = kvmm::parse_balloon_option(balloon);
        if (!parsed)
            return fail(parsed.error().message());
        config.balloon = *parsed;
    }
    if (app.count("--rng")) {
        auto parsed = kvmm::parse_rng_option(rng == "on" ? "" : rng);
        if (!parsed)
            return fail(parsed.error().message());
        config.rng = *parsed;
    }
    if (console_device == "virtio")
        config.virtio_console = true;
    else if (console_device != "serial")
        return fail("invalid --console-device '" + console_device + "': expected serial or virtio");

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

// libFuzzer target: a whole machine's saved state (Machine::restore_state) as untrusted input,
// restored into a fresh machine on the fake hypervisor: serial, i8042, RTC, power control,
// boot marker, pvpanic, virtio entropy and console, one vCPU. The input is used two ways:
//   - as a payload, sealed here, so mutations are not all stopped by the checksum;
//   - as a patch over a real saved payload (taken once from a running machine): the first two
//     bytes pick an offset, the rest overwrite from there, so mutations reach the sections
//     deep inside a state that is otherwise valid.
// A state that does not fit must be refused with an error, never a crash, hang or unbounded
// allocation.
//
// Threading: the machine that provides the template runs its own threads once, at start-up.
#include "arch/x86_64/testing/kernel_images.h"
#include "base/state_io.h"
#include "hypervisor/fake/fake_hypervisor.h"
#include "vmm/machine.h"

#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <future>
#include <span>
#include <string>
#include <unistd.h>

namespace kvmm {
namespace {

VmConfig make_config() {
    // The kernel file the configuration names, removed when the process exits.
    struct KernelFile {
        std::string path = "/tmp/kvmm-machine-state-fuzzer-" + std::to_string(::getpid()) + ".elf";
        KernelFile() {
            auto const image = x86_64::testing::make_pvh_elf();
            std::ofstream(path, std::ios::binary)
                .write(reinterpret_cast<char const*>(image.data()), static_cast<std::streamsize>(image.size()));
        }
        ~KernelFile() { ::unlink(path.c_str()); }
    };
    static KernelFile const kernel;
    std::string const& kernel_path = kernel.path;
    VmConfig config;
    config.kernel_path = kernel_path;
    config.memory_size = 16 << 20;
    config.console = ConsoleConfig { ConsoleConfig::Kind::None, {} };
    config.rng = RngConfig {};
    config.virtio_console = true;
    return config;
}

// The payload of a real machine's state: built, run until its guest waits, paused, saved.
std::vector<std::byte> const& template_payload() {
    static std::vector<std::byte> const payload = [] {
        FakeHypervisor hypervisor;
        hypervisor.add_vcpu_script(0, { ScriptedExit { ScriptedExit::Kind::WaitForKick },
                                        ScriptedExit { ScriptedExit::Kind::WaitForKick } });
        auto machine = Machine::create(make_config(), hypervisor);
        if (!machine)
            std::abort();
        auto stopped = std::async(std::launch::async, [&] { return (*machine)->run(); });
        if (!(*machine)->pause())
            std::abort();
        auto blob = (*machine)->save_state();
        (*machine)->request_stop(StopReason { StopReason::Cause::HostSignal, "fuzzer set-up", 0 });
        stopped.wait();
        if (!blob)
            std::abort();
        auto const opened = open_state(*blob);
        if (!opened)
            std::abort();
        return std::vector<std::byte>(opened->begin(), opened->end());
    }();
    return payload;
}

void restore(std::span<std::byte const> payload) {
    FakeHypervisor hypervisor;
    auto machine = Machine::create(make_config(), hypervisor);
    if (!machine)
        std::abort(); // the configuration is fixed and valid
    (void)(*machine)->restore_state(seal_state(payload));
}

} // namespace
} // namespace kvmm

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    spdlog::set_level(spdlog::level::off);
    (void)kvmm::template_payload();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    auto const bytes = std::as_bytes(std::span(data, size));
    kvmm::restore(bytes);
    if (size >= 2) {
        auto patched = kvmm::template_payload();
        size_t const offset = (size_t { data[0] } << 8 | data[1]) % patched.size();
        auto const patch = bytes.subspan(2);
        for (size_t i = 0; i < patch.size() && offset + i < patched.size(); ++i)
            patched[offset + i] = patch[i];
        kvmm::restore(patched);
    }
    return 0;
}

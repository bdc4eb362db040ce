#include "vmm/exit_handler.h"

#include <spdlog/spdlog.h>

#include <type_traits>

namespace kvmm {

namespace {

template <class... Handlers>
struct Overloaded : Handlers... {
    using Handlers::operator()...;
};
template <class... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;

} // namespace

ExitAction handle_exit(VcpuExit& exit, IoBuses const& buses) {
    return std::visit(
        Overloaded {
            [&](vcpu_exit::IoIn& io) {
                // String I/O (ins) transfers `count` elements of `size` bytes from the same port.
                for (uint32_t i = 0; i < io.count; ++i) {
                    auto element = io.data.subspan(static_cast<size_t>(i) * io.size, io.size);
                    if (!buses.pio.read(io.port, element))
                        SPDLOG_TRACE("unclaimed port read {:#x} size {}", io.port, io.size);
                }
                return ExitAction { ExitAction::Kind::Continue };
            },
            [&](vcpu_exit::IoOut& io) {
                for (uint32_t i = 0; i < io.count; ++i) {
                    auto element = io.data.subspan(static_cast<size_t>(i) * io.size, io.size);
                    if (!buses.pio.write(io.port, element))
                        SPDLOG_TRACE("unclaimed port write {:#x} size {}", io.port, io.size);
                }
                return ExitAction { ExitAction::Kind::Continue };
            },
            [&](vcpu_exit::MmioRead& mmio) {
                if (!buses.mmio.read(mmio.address, mmio.data))
                    spdlog::debug("unclaimed MMIO read at {:#x} size {}", mmio.address, mmio.data.size());
                return ExitAction { ExitAction::Kind::Continue };
            },
            [&](vcpu_exit::MmioWrite& mmio) {
                if (!buses.mmio.write(mmio.address, mmio.data))
                    spdlog::debug("unclaimed MMIO write at {:#x} size {}", mmio.address, mmio.data.size());
                return ExitAction { ExitAction::Kind::Continue };
            },
            // With the in-kernel LAPIC, HLT is handled by KVM; a HLT exit only reaches us without
            // one, and the next run() simply waits for an interrupt again.
            [](vcpu_exit::Halt&) { return ExitAction { ExitAction::Kind::Continue }; },
            [](vcpu_exit::Shutdown&) {
                return ExitAction {
                    ExitAction::Kind::GuestCrashed,
                    "triple fault: the guest hit an exception it could not handle (KVM_EXIT_SHUTDOWN)"
                };
            },
            [](vcpu_exit::SystemEvent& event) {
                switch (event.kind) {
                case vcpu_exit::SystemEvent::Kind::PowerOff:
                    return ExitAction { ExitAction::Kind::PowerOff };
                case vcpu_exit::SystemEvent::Kind::Reset:
                    return ExitAction { ExitAction::Kind::Reset };
                case vcpu_exit::SystemEvent::Kind::Crash:
                    return ExitAction { ExitAction::Kind::GuestCrashed, "the guest reported a crash (panic notifier)" };
                case vcpu_exit::SystemEvent::Kind::Other:
                    break;
                }
                return ExitAction { ExitAction::Kind::GuestCrashed,
                                    fmt::format("unexpected system event type {}", event.raw_type) };
            },
            [](vcpu_exit::Interrupted&) { return ExitAction { ExitAction::Kind::CheckState }; },
            [](vcpu_exit::InternalError& error) {
                return ExitAction { ExitAction::Kind::GuestCrashed, error.reason };
            },
            [](vcpu_exit::FailEntry& failure) {
                return ExitAction { ExitAction::Kind::GuestCrashed,
                                    fmt::format("KVM could not enter the guest (hardware entry failure reason {:#x})",
                                                failure.hardware_reason) };
            },
            [](vcpu_exit::Unknown& unknown) {
                return ExitAction { ExitAction::Kind::GuestCrashed,
                                    fmt::format("unhandled KVM exit reason {}", unknown.raw_reason) };
            },
        },
        exit);
}

} // namespace kvmm

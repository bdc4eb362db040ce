// VcpuExit: why a vCPU stopped running guest code, in hypervisor-neutral terms.
//
// Port I/O and MMIO exits carry a span over the hypervisor's exit buffer: for a
// read, the handler fills it before the next run(); for a write, it holds the
// guest's data. The span is valid only until the next run() of the same vCPU.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>

namespace kvmm {

namespace vcpu_exit {

struct IoIn {
    uint16_t port;
    uint8_t size;            // access width: 1, 2 or 4 bytes
    uint32_t count;          // > 1 for string instructions (ins/rep ins)
    std::span<uint8_t> data; // size * count bytes to fill
};
struct IoOut {
    uint16_t port;
    uint8_t size;
    uint32_t count;
    std::span<uint8_t const> data;
};
struct MmioRead {
    uint64_t address;
    std::span<uint8_t> data; // to fill
};
struct MmioWrite {
    uint64_t address;
    std::span<uint8_t const> data;
};
struct Halt {};
// The guest triple-faulted (or otherwise asked for shutdown) - a dead guest.
struct Shutdown {};
// The guest requested a power state change through a hypervisor-visible path.
struct SystemEvent {
    enum class Kind { PowerOff, Reset, Crash, Other } kind;
    uint32_t raw_type;
};
// run() returned because it was interrupted (a signal or an immediate-exit request).
struct Interrupted {};
// The hypervisor could not run or emulate the guest; `reason` says why.
struct InternalError {
    std::string reason;
};
struct FailEntry {
    uint64_t hardware_reason;
};
struct Unknown {
    uint32_t raw_reason;
};

} // namespace vcpu_exit

using VcpuExit = std::variant<vcpu_exit::IoIn, vcpu_exit::IoOut, vcpu_exit::MmioRead, vcpu_exit::MmioWrite,
                              vcpu_exit::Halt, vcpu_exit::Shutdown, vcpu_exit::SystemEvent, vcpu_exit::Interrupted,
                              vcpu_exit::InternalError, vcpu_exit::FailEntry, vcpu_exit::Unknown>;

} // namespace kvmm

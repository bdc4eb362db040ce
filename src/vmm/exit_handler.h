// Exit handling: what the VMM does with one vCPU exit. A pure function of the
// exit and the buses, so it is unit-tested with synthesised exits and no KVM.
//
// Threading: called on the vCPU's own thread; the buses are immutable after
// build and each device locks itself.
#pragma once

#include "devices/bus/bus.h"
#include "hypervisor/vcpu_exit.h"

#include <string>

namespace kvmm {

struct IoBuses {
    Bus const& pio;
    Bus const& mmio;
};

struct ExitAction {
    enum class Kind {
        Continue,     // run the vCPU again
        CheckState,   // the run was interrupted: look at pause/stop requests, then maybe continue
        PowerOff,     // the guest asked the hypervisor to power off
        Reset,        // the guest asked for a reset
        GuestCrashed, // the guest can no longer run; `detail` says why
    } kind;
    std::string detail {};
};

// Dispatches port I/O (including string I/O of `count` elements) and MMIO to the buses and
// translates every other exit. Unclaimed reads see all-ones and unclaimed writes are dropped,
// as on a PC, so a guest probing absent hardware keeps running.
ExitAction handle_exit(VcpuExit& exit, IoBuses const& buses);

} // namespace kvmm

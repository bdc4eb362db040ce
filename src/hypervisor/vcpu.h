// Vcpu: one virtual CPU. run() enters the guest and returns the next exit.
//
// Threading: a Vcpu is owned and run by exactly one thread; only
// request_immediate_exit() may be called from another thread (it is how the
// VMM interrupts a running vCPU, together with a signal to its thread).
#pragma once

#include "base/expected.h"
#include "hypervisor/vcpu_exit.h"
#include "hypervisor/x86_state.h"

#include <cstdint>
#include <span>
#include <vector>

namespace kvmm {

class Vcpu {
public:
    virtual ~Vcpu() = default;

    virtual uint32_t index() const = 0;

    virtual Expected<VcpuExit> run() = 0;
    // Makes the current or next run() return Interrupted without entering the guest.
    virtual void set_immediate_exit(bool enabled) = 0;

    virtual Expected<X86Registers> registers() const = 0;
    virtual Expected<void> set_registers(X86Registers const&) = 0;
    virtual Expected<X86SpecialRegisters> special_registers() const = 0;
    virtual Expected<void> set_special_registers(X86SpecialRegisters const&) = 0;
    virtual Expected<void> set_cpuid(std::span<CpuidEntry const>) = 0;
    virtual Expected<void> set_msrs(std::span<MsrEntry const>) = 0;
    // Puts the x87/SSE state into its power-on configuration (FCW 0x37f, MXCSR 0x1f80).
    virtual Expected<void> reset_fpu() = 0;
    virtual Expected<LapicState> lapic() const = 0;
    virtual Expected<void> set_lapic(LapicState const&) = 0;
};

} // namespace kvmm

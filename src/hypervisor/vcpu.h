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

    // Saved state (docs/ARCHITECTURE.md "Saved state"). Called on the vCPU's own thread while
    // it is out of run() and every vCPU of the VM is stopped (the VM is paused): the state of
    // one vCPU refers to the others' (interrupts in flight between LAPICs), and no kick may
    // arrive meanwhile. The last exit must have been handled (an IoIn/MmioRead's data filled
    // in): save_state() finishes that instruction without running any further guest code, so
    // the saved registers are at an instruction boundary.
    virtual Expected<X86VcpuState> save_state() = 0;
    // Puts `state` back, into this vCPU or a fresh one with the same index in a VM built the
    // same way (memory mapped, in-kernel irqchip created, and the VM's own state restored
    // first: Vm::restore_state). Values this vCPU cannot hold (too many entries, an XSAVE
    // area of another size, an MSR the hypervisor does not save) are refused, naming the
    // field, before anything is changed; where the hypervisor itself refuses a value half-way,
    // the vCPU's previous state is put back.
    virtual Expected<void> restore_state(X86VcpuState const& state) = 0;
};

} // namespace kvmm

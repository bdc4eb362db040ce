// Vm: one virtual machine on a hypervisor: its memory slots, interrupt
// controllers and vCPUs. Interfaces split by what the VMM needs; the KVM
// backend lives in hypervisor/kvm, a scripted one for tests in hypervisor/fake.
//
// Threading: set up from the builder thread before any vCPU runs;
// set_irq_line() may be called from any thread afterwards.
#pragma once

#include "base/expected.h"
#include "hypervisor/vcpu.h"
#include "hypervisor/x86_state.h"
#include "memory/guest_memory.h"

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace kvmm {

class Vm {
public:
    virtual ~Vm() = default;

    // Registers every region of `memory` as guest RAM (take_dirty_log's `region_index` is the
    // region's index in memory.regions()). `memory` must outlive the Vm.
    virtual Expected<void> map_memory(GuestMemory const& memory) = 0;
    // Maps `image` (page-aligned in size, host memory that outlives the Vm) read-only at guest
    // address `start`: a ROM. The guest reads it like RAM; its writes exit as MMIO writes,
    // which no device claims, so they are dropped (firmware flash at the top of 4 GiB).
    virtual Expected<void> map_read_only(uint64_t start, std::span<std::byte const> image) = 0;

    // Dirty page logging (diff snapshots): once enabled (after map_memory), the hypervisor
    // records every guest page the vCPUs write; take_dirty_log() hands out the pages of memory
    // slot `region_index` written since the last call (or since logging was enabled) and
    // starts a new record. The bitmap has bit (page % 64) of word (page / 64) set for each
    // written 4 KiB page of the region, and as many words as the region needs. Pages written
    // by the host (devices) are not in it: GuestMemory records those. Called while the vCPUs
    // are paused, or the pages they write meanwhile may land in either record. take_dirty_log()
    // may come from any thread (the API thread's snapshot), one caller at a time.
    virtual Expected<void> enable_dirty_logging() = 0;
    virtual Expected<std::vector<uint64_t>> take_dirty_log(size_t region_index) = 0;
    // Creates the in-kernel interrupt controllers (IOAPIC, LAPICs, PIC) and the PIT.
    virtual Expected<void> create_irqchip_and_pit() = 0;
    // Raises (level true) or lowers a global system interrupt line on the IOAPIC/PIC.
    virtual Expected<void> set_irq_line(uint32_t gsi, bool level) = 0;
    // Configuration of the x86 VM: the address of the TSS/identity map pages the hypervisor
    // may need below 4 GiB (must not overlap RAM or device ranges).
    virtual Expected<void> set_tss_address(uint64_t address) = 0;
    // The page the hypervisor may use for its real-mode identity page table (Intel hosts
    // without unrestricted guest); before the first vCPU. Same rule as the TSS pages.
    virtual Expected<void> set_identity_map_address(uint64_t address) = 0;

    // The CPUID leaves the hypervisor and host CPU can give a guest.
    virtual Expected<std::vector<CpuidEntry>> supported_cpuid() const = 0;
    // The most vCPUs this VM can have.
    virtual uint32_t max_vcpus() const = 0;

    virtual Expected<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index) = 0;

    // Fast paths for devices (DESIGN.md, "one event-loop thread"): a guest write of `length`
    // bytes equal to `datamatch` at MMIO `address` signals `event_fd` inside the hypervisor
    // instead of exiting to the vCPU thread (ioeventfd); a write to `event_fd` raises global
    // system interrupt `gsi` as an edge (irqfd). The fds must stay open until unregistered or
    // the Vm is destroyed.
    virtual Expected<void> register_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) = 0;
    virtual Expected<void> unregister_ioeventfd(uint64_t address, uint32_t length, uint64_t datamatch,
                                                int event_fd) = 0;
    virtual Expected<void> register_irqfd(int event_fd, uint32_t gsi) = 0;

    // Saved state of the VM-wide devices inside the hypervisor (PIC pair, IOAPIC, PIT, guest
    // clock); needs create_irqchip_and_pit(). Called while the VM is paused, every vCPU
    // stopped. Save it after the vCPUs' state: Vcpu::save_state() finishes each vCPU's last
    // instruction, which may still be an OUT to the PIC or PIT. Restore it before the vCPUs'
    // state: restoring the IOAPIC and PIC delivers the interrupts still pending in them to
    // the LAPICs, and the vCPUs' saved LAPIC state, restored after, is then what stays.
    // restore_state() refuses (naming the field) before changing anything when a value is
    // out of range, and puts the previous state back if the hypervisor refuses one half-way.
    // The guest clock continues from the saved value (the time the VM spent saved is not
    // added).
    virtual Expected<X86VmState> save_state() = 0;
    virtual Expected<void> restore_state(X86VmState const& state) = 0;
};

} // namespace kvmm

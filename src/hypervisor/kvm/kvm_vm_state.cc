// KvmVm's saved state: the in-kernel PIC pair and IOAPIC (KVM_GET/SET_IRQCHIP), the PIT
// (KVM_GET/SET_PIT2) and the guest clock (KVM_GET/SET_CLOCK).
//
// Order: the vCPUs are saved first and restored last (vm.h says why). Inside the VM the
// interrupt controllers come before the PIT, whose restore reloads its counters and may
// raise IRQ 0 into them; the clock comes last, just before the vCPUs, whose kvmclock MSRs
// then publish it to the guest on their next entry.
//
// The guest clock is set without KVM_CLOCK_REALTIME: it continues from the saved value
// rather than jumping by the wall-clock time the VM spent saved.
//
// Threading: the builder or control thread, while the VM is paused.
#include "hypervisor/kvm/kvm_vm.h"

#include <cerrno>
#include <linux/kvm.h>
#include <sys/ioctl.h>

namespace kvmm {

namespace {

PicState from_kvm(kvm_pic_state const& pic) {
    return PicState { pic.last_irr,
                      pic.irr,
                      pic.imr,
                      pic.isr,
                      pic.priority_add,
                      pic.irq_base,
                      pic.read_reg_select,
                      pic.poll,
                      pic.special_mask,
                      pic.init_state,
                      pic.auto_eoi,
                      pic.rotate_on_auto_eoi,
                      pic.special_fully_nested_mode,
                      pic.init4,
                      pic.elcr,
                      pic.elcr_mask };
}

kvm_pic_state to_kvm(PicState const& pic) {
    kvm_pic_state result {};
    result.last_irr = pic.last_irr;
    result.irr = pic.irr;
    result.imr = pic.imr;
    result.isr = pic.isr;
    result.priority_add = pic.priority_add;
    result.irq_base = pic.irq_base;
    result.read_reg_select = pic.read_reg_select;
    result.poll = pic.poll;
    result.special_mask = pic.special_mask;
    result.init_state = pic.init_state;
    result.auto_eoi = pic.auto_eoi;
    result.rotate_on_auto_eoi = pic.rotate_on_auto_eoi;
    result.special_fully_nested_mode = pic.special_fully_nested_mode;
    result.init4 = pic.init4;
    result.elcr = pic.elcr;
    result.elcr_mask = pic.elcr_mask;
    return result;
}

PitChannelState from_kvm(kvm_pit_channel_state const& channel) {
    return PitChannelState { channel.count,          channel.latched_count, channel.count_latched,
                             channel.status_latched, channel.status,        channel.read_state,
                             channel.write_state,    channel.write_latch,   channel.rw_mode,
                             channel.mode,           channel.bcd,           channel.gate,
                             channel.count_load_time };
}

kvm_pit_channel_state to_kvm(PitChannelState const& channel) {
    kvm_pit_channel_state result {};
    result.count = channel.count;
    result.latched_count = channel.latched_count;
    result.count_latched = channel.count_latched;
    result.status_latched = channel.status_latched;
    result.status = channel.status;
    result.read_state = channel.read_state;
    result.write_state = channel.write_state;
    result.write_latch = channel.write_latch;
    result.rw_mode = channel.rw_mode;
    result.mode = channel.mode;
    result.bcd = channel.bcd;
    result.gate = channel.gate;
    result.count_load_time = channel.count_load_time;
    return result;
}

// What KVM's 8254 can hold (it clamps or misbehaves on other values rather than refusing).
Expected<void> check_pit(PitState const& pit) {
    for (size_t i = 0; i < pit.channels.size(); ++i) {
        auto const& channel = pit.channels[i];
        if (channel.count > 0x10000)
            return Error::format("vm state pit.channel{}.count: {} is more than 65536", i, channel.count);
        // 0xff: a channel the guest never programmed (KVM's reset value).
        if (channel.mode > 5 && channel.mode != 0xff)
            return Error::format("vm state pit.channel{}.mode: {} is not an 8254 mode (0 to 5, or 255 when never "
                                 "programmed)",
                                 i, channel.mode);
        if (channel.rw_mode > 3)
            return Error::format("vm state pit.channel{}.rw_mode: {} is not an access mode (0 to 3)", i,
                                 channel.rw_mode);
    }
    return {};
}

} // namespace

Expected<X86VmState> KvmVm::save_state() {
    if (!m_has_irqchip)
        return Error("VM state: no in-kernel irqchip to save (create_irqchip_and_pit first)");
    X86VmState state;
    for (uint32_t chip :
         { uint32_t { KVM_IRQCHIP_PIC_MASTER }, uint32_t { KVM_IRQCHIP_PIC_SLAVE }, uint32_t { KVM_IRQCHIP_IOAPIC } }) {
        kvm_irqchip irqchip {};
        irqchip.chip_id = chip;
        if (::ioctl(m_vm_fd.get(), KVM_GET_IRQCHIP, &irqchip) != 0)
            return Error::from_errno(fmt::format("KVM_GET_IRQCHIP {}", chip));
        if (chip == KVM_IRQCHIP_PIC_MASTER)
            state.pic_master = from_kvm(irqchip.chip.pic);
        else if (chip == KVM_IRQCHIP_PIC_SLAVE)
            state.pic_slave = from_kvm(irqchip.chip.pic);
        else {
            auto const& ioapic = irqchip.chip.ioapic;
            state.ioapic.base_address = ioapic.base_address;
            state.ioapic.register_select = ioapic.ioregsel;
            state.ioapic.id = ioapic.id;
            state.ioapic.irr = ioapic.irr;
            static_assert(IoapicState::PINS == KVM_IOAPIC_NUM_PINS);
            for (size_t pin = 0; pin < IoapicState::PINS; ++pin)
                state.ioapic.redirection_table[pin] = ioapic.redirtbl[pin].bits;
        }
    }
    kvm_pit_state2 pit {};
    if (::ioctl(m_vm_fd.get(), KVM_GET_PIT2, &pit) != 0)
        return Error::from_errno("KVM_GET_PIT2");
    for (size_t i = 0; i < state.pit.channels.size(); ++i)
        state.pit.channels[i] = from_kvm(pit.channels[i]);
    state.pit.hpet_legacy = (pit.flags & KVM_PIT_FLAGS_HPET_LEGACY) != 0;
    state.pit.speaker_data_on = (pit.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON) != 0;

    kvm_clock_data clock {};
    if (::ioctl(m_vm_fd.get(), KVM_GET_CLOCK, &clock) != 0)
        return Error::from_errno("KVM_GET_CLOCK");
    state.clock.nanoseconds = clock.clock;
    return state;
}

Expected<void> KvmVm::restore_state(X86VmState const& state) {
    if (!m_has_irqchip)
        return Error("VM state: no in-kernel irqchip to restore into (create_irqchip_and_pit first)");
    TRY(check_pit(state.pit));
    // Should KVM refuse a value half-way, the state read here is put back.
    auto const previous = TRY(save_state());
    auto applied = apply_state(state);
    if (applied)
        return {};
    if (auto undone = apply_state(previous); !undone)
        return Error::format("{}; putting the VM's previous state back failed too: {}", applied.error().message(),
                             undone.error().message());
    return applied;
}

Expected<void> KvmVm::apply_state(X86VmState const& state) {
    for (uint32_t chip :
         { uint32_t { KVM_IRQCHIP_PIC_MASTER }, uint32_t { KVM_IRQCHIP_PIC_SLAVE }, uint32_t { KVM_IRQCHIP_IOAPIC } }) {
        kvm_irqchip irqchip {};
        irqchip.chip_id = chip;
        if (chip == KVM_IRQCHIP_PIC_MASTER)
            irqchip.chip.pic = to_kvm(state.pic_master);
        else if (chip == KVM_IRQCHIP_PIC_SLAVE)
            irqchip.chip.pic = to_kvm(state.pic_slave);
        else {
            auto& ioapic = irqchip.chip.ioapic;
            ioapic.base_address = state.ioapic.base_address;
            ioapic.ioregsel = state.ioapic.register_select;
            ioapic.id = state.ioapic.id;
            ioapic.irr = state.ioapic.irr;
            for (size_t pin = 0; pin < IoapicState::PINS; ++pin)
                ioapic.redirtbl[pin].bits = state.ioapic.redirection_table[pin];
        }
        if (::ioctl(m_vm_fd.get(), KVM_SET_IRQCHIP, &irqchip) != 0)
            return Error::from_errno(fmt::format("KVM_SET_IRQCHIP {}", chip));
    }

    kvm_pit_state2 pit {};
    for (size_t i = 0; i < state.pit.channels.size(); ++i)
        pit.channels[i] = to_kvm(state.pit.channels[i]);
    pit.flags = (state.pit.hpet_legacy ? KVM_PIT_FLAGS_HPET_LEGACY : 0u) |
                (state.pit.speaker_data_on ? KVM_PIT_FLAGS_SPEAKER_DATA_ON : 0u);
    if (::ioctl(m_vm_fd.get(), KVM_SET_PIT2, &pit) != 0)
        return Error::from_errno("KVM_SET_PIT2");

    kvm_clock_data clock {};
    clock.clock = state.clock.nanoseconds;
    if (::ioctl(m_vm_fd.get(), KVM_SET_CLOCK, &clock) != 0)
        return Error::from_errno("KVM_SET_CLOCK");
    return {};
}

} // namespace kvmm

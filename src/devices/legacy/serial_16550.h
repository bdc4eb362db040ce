// Serial16550: a 16550A UART, as COM1 (ports 0x3F8-0x3FF, ISA IRQ 4).
//
// Register semantics follow the TI/National PC16550D datasheet (section 8,
// "Registers"): RBR/THR, IER, IIR/FCR, LCR (DLAB), MCR (loopback), LSR, MSR,
// SCR. Transmission is instantaneous: a byte written to THR goes straight to
// the ByteSink and the transmitter reports empty again at once.
//
// Interrupts: the line level is "an enabled interrupt is pending" AND MCR.OUT2,
// the PC's interrupt gate; it is driven on every change, so the in-kernel
// IOAPIC/PIC sees the rising edges an ISA device makes. A THRE interrupt is
// pending after THR is written (or IER.THRE enabled) until the guest reads
// IIR while THRE is the reported source, the behaviour Linux's 8250 driver
// relies on.
//
// Bounds: host input waits in a receive buffer of RECEIVE_CAPACITY (4 KiB)
// bytes, far more than a 16-byte FIFO, so pasted text survives while the guest
// drains it; receive() takes only what fits and the caller keeps the rest.
// Guest output is not buffered at all: each THR byte goes to the sink at once.
//
// Threading: read()/write() from vCPU threads and receive() from the input
// thread may run concurrently; one mutex guards all register state. The sink
// is called after that mutex is released, so a slow console never stalls
// another vCPU polling LSR; a guest driver serialises its own THR writes.
// save() and restore() take the same mutex; they run while the VM is paused
// (no vCPU is inside read()/write()), and restore() drives the interrupt line
// under it as every register access does.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "base/thread_annotations.h"
#include "devices/bus/bus_device.h"
#include "devices/legacy/byte_sink.h"

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace kvmm {

// The UART's saved state (docs/ARCHITECTURE.md "Saved state"): every register the guest can
// write and the bytes waiting in the receive buffer, oldest first. What the guest reads back
// from them is not stored but derived again on restore: LSR (data ready, overrun, the
// transmitter always empty), IIR (the highest-priority enabled source) and the interrupt line's
// level (a pending source AND OUT2, not in loopback), so a blob cannot contradict itself (say,
// "data ready" over an empty buffer). Bytes already given to the output sink are the host's,
// not the UART's: they are not part of this state.
struct Serial16550State {
    static constexpr std::string_view SECTION = "serial-16550";
    static constexpr uint32_t VERSION = 1;

    std::vector<uint8_t> receive_buffer;
    uint8_t interrupt_enable { 0 }; // IER: bits 0-3 only
    uint8_t line_control { 0x03 };  // LCR, DLAB (bit 7) included
    uint8_t modem_control { 0 };    // MCR: bits 0-4 only
    uint8_t scratch { 0 };
    uint8_t divisor_low { 0x0c };
    uint8_t divisor_high { 0 };
    uint8_t modem_status_delta { 0 }; // MSR bits 0-3, cleared when the guest reads MSR
    bool fifo_enabled { false };
    bool transmit_interrupt_pending { false }; // THRE pending until IIR reports it
    bool overrun { false };                    // LSR.OE, cleared when the guest reads LSR

    bool operator==(Serial16550State const&) const = default;
    void encode(StateWriter& writer) const;
    // Refuses a receive buffer longer than Serial16550::RECEIVE_CAPACITY before reading it.
    static Expected<Serial16550State> decode(StateReader& reader);
};

class Serial16550 final : public BusDevice {
public:
    static constexpr size_t RECEIVE_CAPACITY = 4096;

    Serial16550(std::shared_ptr<InterruptLine> irq, std::unique_ptr<ByteSink> output);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    // Host -> guest bytes; returns how many were accepted (0 when the buffer is full).
    size_t receive(std::span<uint8_t const> bytes);

    Serial16550State save() const;
    // Replaces every register and the receive buffer, then drives the interrupt line to the
    // level they imply, even when it seems unchanged: the interrupt controller may have been
    // restored with any level. Refused, naming the field and changing nothing, when the
    // buffer is longer than RECEIVE_CAPACITY or a register has bits the UART never holds.
    Expected<void> restore(Serial16550State const& state);

private:
    uint8_t read_register(uint64_t offset) REQUIRES(m_lock);
    // Returns the byte to transmit to the sink, if the write put one in THR.
    std::optional<uint8_t> write_register(uint64_t offset, uint8_t value) REQUIRES(m_lock);
    uint8_t interrupt_identification() const REQUIRES(m_lock);
    uint8_t modem_status() const REQUIRES(m_lock);
    // The level the registers imply; update_interrupt() drives the line when it changes.
    bool interrupt_level() const REQUIRES(m_lock);
    void update_interrupt() REQUIRES(m_lock);

    std::shared_ptr<InterruptLine> m_irq;
    std::unique_ptr<ByteSink> m_output;

    mutable Mutex m_lock;
    std::deque<uint8_t> m_receive_buffer GUARDED_BY(m_lock);
    uint8_t m_interrupt_enable GUARDED_BY(m_lock) { 0 };
    uint8_t m_line_control GUARDED_BY(m_lock) { 0x03 }; // 8N1 after reset
    uint8_t m_modem_control GUARDED_BY(m_lock) { 0 };
    uint8_t m_scratch GUARDED_BY(m_lock) { 0 };
    uint8_t m_divisor_low GUARDED_BY(m_lock) { 0x0c }; // 9600 baud
    uint8_t m_divisor_high GUARDED_BY(m_lock) { 0 };
    uint8_t m_modem_status_delta GUARDED_BY(m_lock) { 0 };
    bool m_fifo_enabled GUARDED_BY(m_lock) { false };
    bool m_transmit_interrupt_pending GUARDED_BY(m_lock) { false };
    bool m_overrun GUARDED_BY(m_lock) { false };
    bool m_irq_level GUARDED_BY(m_lock) { false };
};

} // namespace kvmm

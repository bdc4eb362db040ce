// ConsoleDevice: virtio console (virtio 1.2 section 5.3) with a single port,
// hvc0 in Linux - an alternative to the 16550 that moves whole buffers per
// notification instead of one byte per port exit.
//
// Output (transmitq) goes to a ByteSink; input arrives through receive() and
// is placed in the driver's receive buffers; what does not fit yet waits in a
// bounded buffer (receive() accepts only what fits, so the caller keeps the
// rest, as it does for the UART). EMERG_WRITE (5.3.4) is offered: a config
// write of emerg_wr prints one character even before the queues run.
// Output is moved in slices of at most a WorkBudget per wake-up; a chain larger
// than a slice is kept, with its offset, and continued on the next turn.
//
// Saved state (section "virtio-console"): the host input not yet delivered (at most
// MAX_PENDING_INPUT bytes, kept whether or not the driver is active), whether it is active, its
// two queues' progress, and a transmit chain held between slices as its head and offset: the
// restored device walks the head's chain again (guest memory is restored first) and goes on
// from that offset, so no output is lost or repeated. The counters are metrics of this process,
// not state.
//
// Threading: see VirtioDevice; receive() runs on the event-loop thread.
#pragma once

#include "devices/legacy/byte_sink.h"
#include "devices/virtio/virtio_device_base.h"

#include <deque>
#include <memory>

namespace kvmm::virtio {

class ConsoleDevice final : public VirtioDeviceBase {
public:
    static constexpr unsigned FEATURE_EMERG_WRITE = 2;
    static constexpr uint16_t QUEUE_SIZE = 256;
    static constexpr size_t MAX_PENDING_INPUT = 64 * 1024;
    static constexpr std::string_view SECTION = "virtio-console";
    static constexpr uint32_t VERSION = 1;

    explicit ConsoleDevice(std::shared_ptr<ByteSink> output) : m_output(std::move(output)) {}

    DeviceType type() const override { return DeviceType::Console; }
    uint64_t features() const override;
    std::span<uint16_t const> queue_max_sizes() const override { return m_queue_sizes; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<uint8_t const> data) override;
    Expected<void> activate(ActivationContext context) override;
    void process_queue(size_t index) override;
    void reset() override;
    Expected<void> save_state(StateWriter& writer) const override;
    Expected<void> restore_state(StateReader& reader, std::optional<ActivationContext> context) override;

    // Host input for the guest; returns how many bytes were taken (the rest: try again later).
    size_t receive(std::span<uint8_t const> bytes);
    bool has_pending_input() const { return !m_pending.empty(); }

    std::vector<Counter> counters() const override {
        return { { "tx_bytes", m_bytes_transmitted },
                 { "rx_bytes", m_bytes_received },
                 { "budget_yields", budget_yields() } };
    }
    uint64_t bytes_transmitted() const { return m_bytes_transmitted; }
    uint64_t bytes_received() const { return m_bytes_received; }

private:
    Expected<void> transmit();
    Expected<void> deliver_input();
    void on_failed() override { m_transmit_offset.reset(); }
    std::string log_name() const override { return "virtio-console"; }

    std::shared_ptr<ByteSink> m_output;
    uint16_t m_queue_sizes[2] { QUEUE_SIZE, QUEUE_SIZE };
    DescriptorChain m_chain; // receive side
    // The transmit chain being copied out, and how far, while one spans several wake-ups.
    DescriptorChain m_transmit_chain;
    std::optional<uint64_t> m_transmit_offset;
    std::deque<uint8_t> m_pending;
    std::vector<std::byte> m_scratch;
    uint64_t m_bytes_transmitted { 0 };
    uint64_t m_bytes_received { 0 };
};

} // namespace kvmm::virtio

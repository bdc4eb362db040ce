// RngDevice: virtio entropy device (virtio 1.2 section 5.4). One queue of
// device-writable buffers, each filled from the host's getrandom(2).
//
// A request is capped (MAX_BYTES_PER_REQUEST) so one huge buffer cannot make the
// event loop spend long on it; the driver simply asks again. An optional
// EntropyBudget (the rate limiter, when configured) decides how many bytes may
// go out now; when it refuses, the chain is put back and the queue is retried
// when `budget_available()` is signalled by the owner. Separately, one wake-up
// serves at most a WorkBudget (work_budget.h) of chains and bytes, so a driver
// that keeps re-posting buffers cannot hold the event loop.
//
// Saved state (section "virtio-rng"): whether it is active and its queue's progress. Nothing
// else is state: a chain is never held between wake-ups (it is returned or put back), the
// entropy source and budget are configuration, and the counters are metrics of this process
// (a restored device counts from zero, as a new process does).
//
// Threading: see VirtioDevice (all work on the event-loop thread).
#pragma once

#include "devices/virtio/virtio_device_base.h"

#include <functional>

namespace kvmm::virtio {

class RngDevice final : public VirtioDeviceBase {
public:
    static constexpr uint32_t MAX_BYTES_PER_REQUEST = 64 * 1024;
    static constexpr uint16_t QUEUE_SIZE = 256;
    static constexpr std::string_view SECTION = "virtio-rng";
    static constexpr uint32_t VERSION = 1;

    // Fills its argument with random bytes or fails; default: getrandom(2).
    using EntropySource = std::function<Expected<void>(std::span<std::byte>)>;
    // Asked before serving `bytes`; false defers the request. Default: always true.
    using Budget = std::function<bool(uint64_t bytes)>;

    explicit RngDevice(EntropySource source = {}, Budget budget = {});

    DeviceType type() const override { return DeviceType::Entropy; }
    uint64_t features() const override;
    std::span<uint16_t const> queue_max_sizes() const override { return m_queue_sizes; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Expected<void> activate(ActivationContext context) override;
    void process_queue(size_t index) override;
    void reset() override;
    Expected<void> save_state(StateWriter& writer) const override;
    Expected<void> restore_state(StateReader& reader, std::optional<ActivationContext> context) override;

    std::vector<Counter> counters() const override {
        return { { "bytes", m_bytes_served },
                 { "requests_deferred", m_requests_deferred },
                 { "budget_yields", budget_yields() } };
    }
    uint64_t bytes_served() const { return m_bytes_served; }
    uint64_t requests_deferred() const { return m_requests_deferred; }

private:
    Expected<void> drain();
    std::string log_name() const override { return "virtio-rng"; }

    EntropySource m_source;
    Budget m_budget;
    uint16_t m_queue_sizes[1] { QUEUE_SIZE };
    DescriptorChain m_chain;
    std::vector<std::byte> m_scratch;
    uint64_t m_bytes_served { 0 };
    uint64_t m_requests_deferred { 0 };
};

} // namespace kvmm::virtio

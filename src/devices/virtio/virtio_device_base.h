// VirtioDeviceBase: what every virtio device here does the same way, around its own work:
//   - it holds the ActivationContext from activate() (or a restore) until reset or failure;
//   - it fails by dropping that context and reporting through it, which puts the device into
//     DEVICE_NEEDS_RESET (2.1.2) with a configuration-change interrupt and one rate-limited
//     log line (the transport does both); the device is not called again until reset;
//   - it ends a WorkBudget slice by counting the yield and asking for another turn of the
//     queue (work_budget.h), and raises the used-buffer interrupt only when the driver asked
//     for it (2.7.7);
//   - it logs what a misbehaving driver does at most once per second (RateLimitedLog).
// The device keeps everything specific to it: its queues' meaning, its counters' names, what
// it lets go of when it fails (on_failed()).
//
// Threading: as VirtioDevice. The context is used on the event-loop thread only;
// budget_yields() may be read from any thread; guest_error() may be called from any thread
// (a device's read_config/write_config run on vCPU threads), and calls log_name() there.
#pragma once

#include "base/error.h"
#include "base/expected.h"
#include "base/rate_limited_log.h"
#include "devices/virtio/virtio_device.h"

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

namespace kvmm::virtio {

class VirtioDeviceBase : public VirtioDevice {
public:
    // Turns that stopped at the per-wake-up budget and asked to be called again. Any thread.
    uint64_t budget_yields() const { return m_budget_yields.load(std::memory_order_relaxed); }

protected:
    // Whether the driver's queues are being served: activated, and not reset or failed since.
    bool active() const { return m_context.has_value(); }
    // The active device's context. Only while active().
    ActivationContext& context() { return *m_context; }
    ActivationContext const& context() const { return *m_context; }
    // Starts serving the queues of `context` (activate(), or a restore of an active device).
    void take_context(ActivationContext context) { m_context = std::move(context); }
    // Stops serving them (reset): the old queues' guest memory is not touched again.
    void drop_context() { m_context.reset(); }

    // The driver broke the device's rules beyond recovery (a malformed ring): the context is
    // dropped, on_failed() lets go of what the device held for the old queues, and then the
    // transport hears of `error` (DEVICE_NEEDS_RESET, interrupt, log line). Nothing if inactive.
    void fail(Error const& error);
    // fail() with the error of a step of queue work, if it has one.
    void fail_on_error(Expected<void> const& result) {
        if (!result)
            fail(result.error());
    }
    // What the device held for the queues of a context that fail() dropped. Event-loop thread.
    virtual void on_failed() {}

    // A WorkBudget slice is spent with work left on `queue_index`: counts the yield and asks
    // for another turn of that queue after the rest of the event loop. Only while active().
    void yield_turn(size_t queue_index);
    // Raises the used-buffer interrupt if the driver wants one for what was returned on `queue`
    // since the last time (2.7.7: used_event with EVENT_IDX, else NO_INTERRUPT). Only while
    // active().
    Expected<void> interrupt_if_wanted(Queue& queue);

    // A driver's mistake that the device survives: one warning line per second at most, each
    // starting with log_name(), so a hostile driver cannot flood the host's log.
    void guest_error(std::string const& message);
    // How the device names itself in log lines ("virtio-blk /path/to/image").
    virtual std::string log_name() const = 0;

private:
    std::optional<ActivationContext> m_context;
    std::atomic<uint64_t> m_budget_yields { 0 };
    RateLimitedLog m_guest_log;
};

} // namespace kvmm::virtio

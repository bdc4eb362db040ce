// VmLifecycle: why and when the VM stops. Any thread (a vCPU seeing power-off
// or a triple fault, the event loop seeing SIGTERM) reports a StopReason; the
// first report wins and wakes the event loop through an eventfd.
//
// Threading: request_stop() and reason() are safe from any thread.
#pragma once

#include "base/event_fd.h"
#include "base/expected.h"
#include "base/thread_annotations.h"

#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace kvmm {

struct StopReason {
    enum class Cause {
        PowerOff,     // the guest powered off (ACPI sleep control)
        Reset,        // the guest reset (i8042 0xFE, ACPI reset register, reboot)
        GuestCrashed, // triple fault, KVM internal or entry failure
        HostSignal,   // SIGINT/SIGTERM to kvmm
        VmmFailure,   // kvmm itself could not go on (an ioctl failed)
    } cause;
    std::string detail;
    int signal_number { 0 }; // for HostSignal

    // The process exit status for this reason: 0 power-off/reset, 2 guest died or VMM failure,
    // 128+N for signal N.
    int exit_status() const;
    char const* cause_name() const;
};

class VmLifecycle {
public:
    static Expected<std::unique_ptr<VmLifecycle>> create();

    // Records the reason if none is recorded yet and wakes the event loop; later reports are ignored.
    void request_stop(StopReason reason);
    std::optional<StopReason> reason() const;
    bool stop_requested() const;
    int event_fd() const { return m_wakeup.fd(); }

private:
    explicit VmLifecycle(EventFd wakeup) : m_wakeup(std::move(wakeup)) {}

    EventFd m_wakeup;
    mutable Mutex m_lock; // guards m_reason
    std::optional<StopReason> m_reason GUARDED_BY(m_lock);
};

} // namespace kvmm

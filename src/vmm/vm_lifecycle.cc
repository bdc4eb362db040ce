#include "vmm/vm_lifecycle.h"

namespace kvmm {

int StopReason::exit_status() const {
    switch (cause) {
    case Cause::PowerOff:
    case Cause::Reset:
        return 0;
    case Cause::GuestCrashed:
    case Cause::VmmFailure:
        return 2;
    case Cause::HostSignal:
        return 128 + signal_number;
    }
    return 2;
}

char const* StopReason::cause_name() const {
    switch (cause) {
    case Cause::PowerOff:
        return "guest powered off";
    case Cause::Reset:
        return "guest reset";
    case Cause::GuestCrashed:
        return "guest crashed";
    case Cause::HostSignal:
        return "stopped by signal";
    case Cause::VmmFailure:
        return "VMM failure";
    }
    return "unknown";
}

Expected<std::unique_ptr<VmLifecycle>> VmLifecycle::create() {
    return std::unique_ptr<VmLifecycle>(new VmLifecycle(TRY(EventFd::create())));
}

void VmLifecycle::request_stop(StopReason reason) {
    {
        MutexLock guard(m_lock);
        if (m_reason)
            return;
        m_reason = std::move(reason);
    }
    // An eventfd write cannot fail short of a counter overflow, which one write never reaches.
    (void)m_wakeup.signal();
}

std::optional<StopReason> VmLifecycle::reason() const {
    MutexLock guard(m_lock);
    return m_reason;
}

bool VmLifecycle::stop_requested() const {
    MutexLock guard(m_lock);
    return m_reason.has_value();
}

} // namespace kvmm

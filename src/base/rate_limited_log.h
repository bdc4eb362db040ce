// RateLimitedLog: warnings about misbehaving guests, at most one line per interval (one second
// by default). A hostile driver can trigger an error on every register access or descriptor;
// logging each one would let it flood the host's log and burn the VMM's CPU time on formatting.
// Messages inside the interval are dropped and counted, and the next line that is written says
// how many were dropped, so nothing disappears without a trace.
//
// A dropped message is never formatted: warn() checks the limit before it builds the line.
//
// Threading: thread-safe; a device's vCPU threads and its event-loop thread may share one. The
// lock is held only for the check, never while writing the line. The Clock must outlive it.
#pragma once

#include "base/thread_annotations.h"
#include "base/token_bucket.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace kvmm {

class RateLimitedLog {
public:
    explicit RateLimitedLog(std::chrono::nanoseconds interval = std::chrono::seconds(1),
                            Clock const& clock = monotonic_clock());
    RateLimitedLog(RateLimitedLog const&) = delete;
    RateLimitedLog& operator=(RateLimitedLog const&) = delete;

    // Writes the formatted line as a warning unless a line was written less than one interval
    // ago; then it only counts the message. A written line that follows dropped ones ends in
    // " (N similar messages suppressed)".
    template <typename... Args>
    void warn(fmt::format_string<Args...> format, Args&&... args) {
        auto const suppressed = admit();
        if (!suppressed)
            return;
        write(fmt::format(format, std::forward<Args>(args)...), *suppressed);
    }

    // Messages dropped since the last line was written.
    uint64_t suppressed() const;

private:
    // The number of messages dropped before this one when this one may be written (and resets
    // it); nullopt when this one is dropped.
    std::optional<uint64_t> admit();
    static void write(std::string const& line, uint64_t suppressed);

    std::chrono::nanoseconds const m_interval;
    Clock const& m_clock;
    mutable Mutex m_lock; // guards the two fields below
    std::optional<std::chrono::nanoseconds> m_last_written GUARDED_BY(m_lock);
    uint64_t m_suppressed GUARDED_BY(m_lock) { 0 };
};

} // namespace kvmm

#include "base/rate_limited_log.h"

#include <spdlog/spdlog.h>

namespace kvmm {

RateLimitedLog::RateLimitedLog(std::chrono::nanoseconds interval, Clock const& clock)
    : m_interval(interval), m_clock(clock) {}

std::optional<uint64_t> RateLimitedLog::admit() {
    auto const now = m_clock.now();
    MutexLock guard(m_lock);
    if (m_last_written && now - *m_last_written < m_interval) {
        ++m_suppressed;
        return std::nullopt;
    }
    m_last_written = now;
    return std::exchange(m_suppressed, 0);
}

uint64_t RateLimitedLog::suppressed() const {
    MutexLock guard(m_lock);
    return m_suppressed;
}

void RateLimitedLog::write(std::string const& line, uint64_t suppressed) {
    if (suppressed > 0)
        spdlog::warn("{} ({} similar messages suppressed)", line, suppressed);
    else
        spdlog::warn("{}", line);
}

} // namespace kvmm

// WorkBudget: how much one wake-up of a device may do before it yields the
// event loop.
//
// Every device shares one event-loop thread with signals (SIGTERM), pause,
// API requests and the other devices. A driver can keep a queue supplied for
// ever (re-posting buffers as fast as they come back) or hand over chains of
// many gigabytes, so a handler that drains "until empty" may never return.
// Each handler therefore starts a WorkBudget, charges every chain and every
// byte it moves against it, and when it is spent stops, asks for another turn
// (ActivationContext::reschedule) and returns. Work is never dropped, only
// spread over rounds of the loop, and the level-triggered loop serves every
// other ready fd in between, so devices share the thread fairly.
//
// The defaults keep one slice well under a millisecond of host work on the
// reference machine (a 256-entry queue, or 1 MiB copied), small against the
// 1 s SIGTERM bound and the 100 ms API bound, large enough that a busy device
// still moves hundreds of MB/s.
//
// Threading: a value type used within one handler call.
#pragma once

#include <algorithm>
#include <cstdint>

namespace kvmm::virtio {

class WorkBudget {
public:
    static constexpr uint32_t DEFAULT_CHAINS = 256;
    static constexpr uint64_t DEFAULT_BYTES = uint64_t { 1 } << 20;

    constexpr WorkBudget() = default;
    constexpr WorkBudget(uint32_t chains, uint64_t bytes) : m_chains(chains), m_bytes(bytes) {}

    constexpr bool exhausted() const { return m_chains == 0 || m_bytes == 0; }
    constexpr uint64_t bytes_left() const { return m_bytes; }

    // One chain (request, packet) handled.
    constexpr void charge_chain() { m_chains -= m_chains > 0 ? 1 : 0; }
    // Bytes copied or submitted; more than is left just spends the rest.
    constexpr void charge_bytes(uint64_t bytes) { m_bytes -= std::min(bytes, m_bytes); }

private:
    uint32_t m_chains { DEFAULT_CHAINS };
    uint64_t m_bytes { DEFAULT_BYTES };
};

} // namespace kvmm::virtio

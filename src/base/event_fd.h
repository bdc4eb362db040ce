// EventFd: an eventfd(2) counter, the signal between threads (and, later,
// ioeventfd/irqfd with KVM). RAII through UniqueFd.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <cstdint>

namespace kvmm {

class EventFd {
public:
    static Expected<EventFd> create();

    Expected<void> signal(uint64_t value = 1) const;
    // Returns the counter and resets it; fails with EAGAIN when it is zero (non-blocking fd).
    Expected<uint64_t> consume() const;
    int fd() const { return m_fd.get(); }

private:
    explicit EventFd(UniqueFd fd) : m_fd(std::move(fd)) {}
    UniqueFd m_fd;
};

} // namespace kvmm

#include "base/event_fd.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace kvmm {

Expected<EventFd> EventFd::create() {
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return Error::from_errno("eventfd");
    return EventFd(UniqueFd(fd));
}

Expected<void> EventFd::signal(uint64_t value) const {
    if (::write(m_fd.get(), &value, sizeof(value)) != sizeof(value))
        return Error::from_errno("eventfd write");
    return {};
}

Expected<uint64_t> EventFd::consume() const {
    uint64_t value = 0;
    if (::read(m_fd.get(), &value, sizeof(value)) != sizeof(value))
        return Error::from_errno("eventfd read");
    return value;
}

} // namespace kvmm

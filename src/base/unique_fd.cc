#include "base/unique_fd.h"

#include <unistd.h>

namespace kvmm {

void UniqueFd::reset(int fd) {
    if (m_fd >= 0)
        ::close(m_fd); // Linux releases the descriptor even when close reports EINTR.
    m_fd = fd;
}

} // namespace kvmm

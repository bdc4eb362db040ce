// ScopedUmask: sets the process umask for one test and restores the previous one when it goes,
// so a test can show that a file's mode does not depend on the umask of whoever starts kvmm
// (umask 000 is what an attacker hopes for: every file created without an explicit mode
// becomes world-writable).
//
// Threading: the umask is per process; use it only in single-threaded test bodies, or while
// no other thread creates files.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

namespace kvmm::testing {

class ScopedUmask {
public:
    explicit ScopedUmask(mode_t mask) : m_previous(::umask(mask)) {}
    ~ScopedUmask() { ::umask(m_previous); }
    ScopedUmask(ScopedUmask const&) = delete;
    ScopedUmask& operator=(ScopedUmask const&) = delete;

private:
    mode_t m_previous;
};

} // namespace kvmm::testing

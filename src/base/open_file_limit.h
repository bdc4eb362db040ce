// The process's open-file limit (RLIMIT_NOFILE). kvmm needs an fd per disk, TAP, vsock
// connection, API client and eventfd; the common default soft limit of 1024 runs out under a
// guest that opens many vsock connections while the hard limit usually allows far more, so
// kvmm raises the soft limit to the hard one at start.
//
// Threading: process-wide state; call from the main thread before other threads start.
#pragma once

#include "base/expected.h"

#include <cstdint>

namespace kvmm {

struct OpenFileLimit {
    uint64_t previous_soft { 0 }; // the soft limit before the call
    uint64_t soft { 0 };          // the soft limit now
    uint64_t hard { 0 };
};

// Below this hard limit a busy VM (hundreds of vsock connections, API clients, many devices)
// can run out of descriptors; kvmm warns at start.
constexpr uint64_t RECOMMENDED_OPEN_FILE_LIMIT = 4096;

// Raises the soft RLIMIT_NOFILE to the hard limit and reports both.
Expected<OpenFileLimit> raise_open_file_limit();

} // namespace kvmm

// The block engine's io_uring, restricted before it accepts its first request (Linux 5.10,
// io_uring_register(2) IORING_REGISTER_RESTRICTIONS): the ring is created disabled
// (IORING_SETUP_R_DISABLED), the image is registered as fixed file RESTRICTED_RING_FILE_INDEX,
// the completion eventfd is registered, and then the ring is limited to
//   * the opcodes IoUringEngine submits: READV, WRITEV, FSYNC, FALLOCATE;
//   * submissions on registered files only (IOSQE_FIXED_FILE required, no other flag);
//   * no further io_uring_register operation (no new files, buffers or eventfds) except
//     IORING_UNREGISTER_FILES, which the engine's teardown needs: the kernel frees a closed
//     ring's files later, from a work queue, so the image (and its lock) would outlive the
//     engine; unregistering first releases it before the destructor returns;
// and only then enabled. seccomp cannot see the operations a ring performs, so without this a
// thread that reaches the ring could open, read or write any file through it; with it, a
// forbidden SQE completes with -EACCES.
//
// Threading: the ring is the caller's; no state here.
#pragma once

#include "base/expected.h"

struct io_uring;

namespace kvmm {

inline constexpr unsigned RESTRICTED_RING_FILE_INDEX = 0;

// Initialises `ring` (queue depth `entries`, SUBMIT_ALL where the kernel has it) with `file`
// as its only fixed file and `event_fd` signalled on completions, restricted as above and
// enabled. On failure the ring is torn down and the error names the step.
Expected<void> set_up_restricted_ring(io_uring& ring, unsigned entries, int file, int event_fd);

} // namespace kvmm

#include "backends/disk/restricted_ring.h"

#include <liburing.h>

#include <array>
#include <cerrno>
#include <sys/syscall.h>
#include <unistd.h>

namespace kvmm {

namespace {

io_uring_restriction allow_opcode(uint8_t opcode) {
    io_uring_restriction restriction {};
    restriction.opcode = IORING_RESTRICTION_SQE_OP;
    restriction.sqe_op = opcode;
    return restriction;
}

io_uring_restriction allow_register_operation(uint8_t operation) {
    io_uring_restriction restriction {};
    restriction.opcode = IORING_RESTRICTION_REGISTER_OP;
    restriction.register_op = operation;
    return restriction;
}

io_uring_restriction sqe_flags(uint16_t kind, uint8_t flags) {
    io_uring_restriction restriction {};
    restriction.opcode = kind;
    restriction.sqe_flags = flags;
    return restriction;
}

// liburing 2.3 declares io_uring_register_restrictions() and io_uring_enable_rings(), but
// Debian 12's shared library does not export them (they are missing from its symbol map until
// liburing 2.4), so the two register operations are made directly (io_uring_register(2)).
int register_operation(io_uring const& ring, unsigned operation, void const* argument, unsigned count) {
    long const result = ::syscall(__NR_io_uring_register, ring.ring_fd, operation, argument, count);
    return result < 0 ? -errno : static_cast<int>(result);
}

} // namespace

Expected<void> set_up_restricted_ring(io_uring& ring, unsigned entries, int file, int event_fd) {
    // SUBMIT_ALL (Linux 5.18): one bad SQE must not hold back the rest of the batch.
    int result = ::io_uring_queue_init(entries, &ring, IORING_SETUP_SUBMIT_ALL | IORING_SETUP_R_DISABLED);
    if (result == -EINVAL)
        result = ::io_uring_queue_init(entries, &ring, IORING_SETUP_R_DISABLED);
    if (result < 0)
        return Error::from_errno(fmt::format("io_uring_queue_init with {} entries (disabled)", entries), -result);
    auto fail = [&ring](char const* step, int error_number) {
        ::io_uring_queue_exit(&ring);
        return Error::from_errno(step, error_number);
    };
    if (result = ::io_uring_register_files(&ring, &file, 1); result < 0)
        return fail("io_uring_register_files", -result);
    if (result = ::io_uring_register_eventfd(&ring, event_fd); result < 0)
        return fail("io_uring_register_eventfd", -result);
    std::array const restrictions {
        allow_opcode(IORING_OP_READV),
        allow_opcode(IORING_OP_WRITEV),
        allow_opcode(IORING_OP_FSYNC),
        allow_opcode(IORING_OP_FALLOCATE),
        sqe_flags(IORING_RESTRICTION_SQE_FLAGS_REQUIRED, IOSQE_FIXED_FILE),
        sqe_flags(IORING_RESTRICTION_SQE_FLAGS_ALLOWED, IOSQE_FIXED_FILE),
        allow_register_operation(IORING_UNREGISTER_FILES),
    };
    // Of the register operations only IORING_UNREGISTER_FILES stays, which can only take away.
    if (result = register_operation(ring, IORING_REGISTER_RESTRICTIONS, restrictions.data(),
                                    static_cast<unsigned>(restrictions.size()));
        result < 0)
        return fail("io_uring_register_restrictions", -result);
    if (result = register_operation(ring, IORING_REGISTER_ENABLE_RINGS, nullptr, 0); result < 0)
        return fail("io_uring_enable_rings", -result);
    return {};
}

} // namespace kvmm

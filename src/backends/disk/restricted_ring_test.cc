#include "backends/disk/restricted_ring.h"

#include "base/event_fd.h"
#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>
#include <liburing.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

namespace kvmm {
namespace {

using testing::TemporaryDirectory;

class RestrictedRingTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto const path = m_directory / "image.raw";
        m_image = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        ASSERT_GE(m_image, 0);
        std::string const content(4096, 'k');
        ASSERT_EQ(::pwrite(m_image, content.data(), content.size(), 0), 4096);
        m_other = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        ASSERT_GE(m_other, 0);
        auto event = EventFd::create();
        ASSERT_TRUE(event);
        m_event.emplace(std::move(*event));
        auto const ready = set_up_restricted_ring(m_ring, 8, m_image, m_event->fd());
        ASSERT_TRUE(ready) << ready.error().message();
        m_ring_ready = true;
    }
    void TearDown() override {
        if (m_ring_ready)
            ::io_uring_queue_exit(&m_ring);
        ::close(m_other);
        ::close(m_image);
    }

    // Submits the one prepared SQE and returns its completion's result.
    int submit_and_wait() {
        EXPECT_EQ(::io_uring_submit(&m_ring), 1);
        io_uring_cqe* cqe = nullptr;
        EXPECT_EQ(::io_uring_wait_cqe(&m_ring, &cqe), 0);
        int const result = cqe->res;
        ::io_uring_cqe_seen(&m_ring, cqe);
        return result;
    }

    TemporaryDirectory m_directory;
    int m_image { -1 };
    int m_other { -1 };
    std::optional<EventFd> m_event;
    io_uring m_ring {};
    bool m_ring_ready { false };
    char m_buffer[512] {};
    iovec m_segment { m_buffer, sizeof(m_buffer) };
};

TEST_F(RestrictedRingTest, AReadOfTheRegisteredFileSucceeds) {
    io_uring_sqe* sqe = ::io_uring_get_sqe(&m_ring);
    ::io_uring_prep_readv(sqe, static_cast<int>(RESTRICTED_RING_FILE_INDEX), &m_segment, 1, 0);
    ::io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
    EXPECT_EQ(submit_and_wait(), 512);
    EXPECT_EQ(m_buffer[0], 'k');
}

TEST_F(RestrictedRingTest, AnUnregisteredDescriptorIsRefusedByTheKernel) {
    io_uring_sqe* sqe = ::io_uring_get_sqe(&m_ring);
    ::io_uring_prep_readv(sqe, m_other, &m_segment, 1, 0); // a plain fd, no IOSQE_FIXED_FILE
    EXPECT_EQ(submit_and_wait(), -EACCES);
    EXPECT_EQ(m_buffer[0], '\0');
}

TEST_F(RestrictedRingTest, AForbiddenOpcodeIsRefusedByTheKernel) {
    io_uring_sqe* sqe = ::io_uring_get_sqe(&m_ring);
    ::io_uring_prep_openat(sqe, AT_FDCWD, "/etc/hostname", O_RDONLY, 0);
    EXPECT_EQ(submit_and_wait(), -EACCES);
    sqe = ::io_uring_get_sqe(&m_ring);
    ::io_uring_prep_read(sqe, static_cast<int>(RESTRICTED_RING_FILE_INDEX), m_buffer, sizeof(m_buffer), 0);
    ::io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE); // READ (not READV) is not among the opcodes
    EXPECT_EQ(submit_and_wait(), -EACCES);
}

TEST_F(RestrictedRingTest, AnExtraSqeFlagIsRefusedByTheKernel) {
    io_uring_sqe* sqe = ::io_uring_get_sqe(&m_ring);
    ::io_uring_prep_readv(sqe, static_cast<int>(RESTRICTED_RING_FILE_INDEX), &m_segment, 1, 0);
    ::io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE | IOSQE_ASYNC);
    EXPECT_EQ(submit_and_wait(), -EACCES);
}

TEST_F(RestrictedRingTest, RegisteringAnotherFileOrEventfdAfterStartIsRefused) {
    int const other = m_other;
    EXPECT_EQ(::io_uring_register_files_update(&m_ring, 0, &other, 1), -EACCES);
    EXPECT_EQ(::io_uring_unregister_eventfd(&m_ring), -EACCES);
    EXPECT_EQ(::io_uring_register_eventfd(&m_ring, m_other), -EACCES);
    // Only taking the file away is allowed (the engine's teardown).
    EXPECT_EQ(::io_uring_unregister_files(&m_ring), 0);
}

} // namespace
} // namespace kvmm

#include "api/host_checks.h"

#include "base/unique_fd.h"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace kvmm {
namespace {

UniqueFd bound_socket(std::string const& path, int type) {
    UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.data(), path.size());
    if (!fd.is_valid() || ::bind(fd.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0)
        return {};
    return fd;
}

class SocketPathTest : public ::testing::Test {
protected:
    void SetUp() override { ::unlink(m_path.c_str()); }
    void TearDown() override { ::unlink(m_path.c_str()); }
    std::string m_path = ::testing::TempDir() + "kvmm-host-checks-" + std::to_string(::getpid()) + ".sock";
};

// Firecracker's test_api_socket_in_use binds a socket without listening on it and expects
// Firecracker to refuse the path; a connect() probe cannot tell that socket from a stale file.
TEST_F(SocketPathTest, BoundButNotListening_IsInUse) {
    UniqueFd socket = bound_socket(m_path, SOCK_STREAM);
    ASSERT_TRUE(socket.is_valid());
    auto checked = check_socket_path_unbound(m_path);
    ASSERT_FALSE(checked);
    EXPECT_NE(checked.error().message().find("in use"), std::string::npos) << checked.error().message();
}

TEST_F(SocketPathTest, ListeningOrDatagram_IsInUse) {
    UniqueFd listening = bound_socket(m_path, SOCK_STREAM);
    ASSERT_TRUE(listening.is_valid());
    ASSERT_EQ(::listen(listening.get(), 1), 0);
    EXPECT_FALSE(check_socket_path_unbound(m_path));
    listening.reset();
    ::unlink(m_path.c_str());
    UniqueFd datagram = bound_socket(m_path, SOCK_DGRAM);
    ASSERT_TRUE(datagram.is_valid());
    EXPECT_FALSE(check_socket_path_unbound(m_path));
}

TEST_F(SocketPathTest, StaleSocketFileOrNothing_IsNotInUse) {
    EXPECT_TRUE(check_socket_path_unbound(m_path));
    UniqueFd socket = bound_socket(m_path, SOCK_STREAM);
    ASSERT_TRUE(socket.is_valid());
    socket.reset(); // the file stays, nobody is bound to it
    ASSERT_EQ(::access(m_path.c_str(), F_OK), 0);
    auto checked = check_socket_path_unbound(m_path);
    EXPECT_TRUE(checked) << checked.error().message();
}

TEST(CheckVsockDirectory, NeedsAnExistingDirectory) {
    EXPECT_TRUE(check_vsock_directory(VsockConfig { 3, "/tmp/v.sock" }));
    EXPECT_TRUE(check_vsock_directory(VsockConfig { 3, "relative.sock" }));
    EXPECT_FALSE(check_vsock_directory(VsockConfig { 3, "/nonexistent-kvmm-dir/v.sock" }));
}

} // namespace
} // namespace kvmm

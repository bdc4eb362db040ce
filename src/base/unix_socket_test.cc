#include "base/unix_socket.h"

#include "base/testing/scoped_umask.h"
#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

namespace kvmm {
namespace {

using namespace std::chrono_literals;
using testing::ScopedUmask;
using testing::TemporaryDirectory;

class UnixSocketTest : public ::testing::Test {
protected:
    // A socket file at `path` whose socket is closed: what a process that died leaves.
    void leave_stale_socket() {
        auto address = MUST(unix_socket_address(path));
        UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        ASSERT_EQ(::bind(stale.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)), 0);
    }

    static ino_t inode_of(std::string const& file) {
        struct stat status {};
        return ::lstat(file.c_str(), &status) == 0 ? status.st_ino : 0;
    }

    TemporaryDirectory temporary { "kvmm-unix-socket" };
    std::string const& directory = temporary.path();
    std::string const path = temporary / "s.sock";
};

TEST_F(UnixSocketTest, Listen_SocketFileHasTheAskedModeUnderAnOpenUmask) {
    ScopedUmask const open_umask(0);
    for (mode_t const mode : { 0600, 0660 }) {
        auto listener = MUST(UnixListener::listen(path, { .what = "test socket", .mode = mode }));
        struct stat status {};
        ASSERT_EQ(::stat(path.c_str(), &status), 0);
        EXPECT_EQ(status.st_mode & 07777, mode);
    }
}

TEST_F(UnixSocketTest, Listen_AcceptsConnectionsAndIsCloseOnExecAndNonBlocking) {
    auto listener = MUST(UnixListener::listen(path, { .what = "test socket", .mode = 0600 }));
    EXPECT_EQ(listener.path(), path);
    EXPECT_TRUE(::fcntl(listener.fd(), F_GETFD) & FD_CLOEXEC);
    EXPECT_TRUE(::fcntl(listener.fd(), F_GETFL) & O_NONBLOCK);
    struct stat status {};
    ASSERT_EQ(::stat(path.c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 0777, 0600u);
    auto client = MUST(connect_unix_socket(path));
    EXPECT_TRUE(::fcntl(client.get(), F_GETFD) & FD_CLOEXEC);
    EXPECT_FALSE(::fcntl(client.get(), F_GETFL) & O_NONBLOCK);
    UniqueFd accepted(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
    EXPECT_TRUE(accepted.is_valid());
}

TEST_F(UnixSocketTest, StaleSocketFile_IsTakenOver) {
    leave_stale_socket();
    ASSERT_TRUE(std::filesystem::is_socket(path));
    auto listener = UnixListener::listen(path, { .what = "test socket" });
    ASSERT_TRUE(listener) << listener.error().message();
    EXPECT_TRUE(connect_unix_socket(path));
}

TEST_F(UnixSocketTest, LiveSocket_IsRefusedNamingThePathAndLeftServing) {
    auto first = MUST(UnixListener::listen(path, { .what = "test socket" }));
    auto second = UnixListener::listen(path, { .what = "test socket" });
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().message().find("test socket '" + path + "' is in use"), std::string::npos)
        << second.error().message();
    EXPECT_TRUE(connect_unix_socket(path)) << "the live socket's file was removed";
}

TEST_F(UnixSocketTest, LiveSocketWithAFullBacklog_IsRefused) {
    auto first = MUST(UnixListener::listen(path, { .backlog = 0 }));
    std::vector<UniqueFd> queued;
    // Fill the backlog: non-blocking connects fail with EAGAIN once it is full.
    while (queued.size() < 64) {
        auto connected = connect_unix_socket(path, UnixConnectOptions { .non_blocking = true });
        if (!connected) {
            EXPECT_EQ(connected.error().error_number(), EAGAIN) << connected.error().message();
            break;
        }
        queued.push_back(std::move(*connected));
    }
    auto second = UnixListener::listen(path);
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().message().find("in use"), std::string::npos) << second.error().message();
}

TEST_F(UnixSocketTest, RegularFile_IsRefusedAndKept) {
    UniqueFd file(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    ASSERT_TRUE(file.is_valid());
    auto listener = UnixListener::listen(path, { .what = "test socket" });
    ASSERT_FALSE(listener);
    EXPECT_NE(listener.error().message().find("'" + path + "' exists and is not a socket"), std::string::npos)
        << listener.error().message();
    EXPECT_TRUE(std::filesystem::is_regular_file(path));
}

TEST_F(UnixSocketTest, ProbeDecidesWhetherAnExistingSocketIsLive) {
    leave_stale_socket();
    auto refused =
        UnixListener::listen(path, { .probe = [](std::string const&) -> Expected<std::optional<std::string>> {
                                 return std::optional<std::string>("the probe says so");
                             } });
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("the probe says so"), std::string::npos) << refused.error().message();
    bool probed = false;
    auto taken = UnixListener::listen(path, { .probe = [&](std::string const& probed_path) {
                                          probed = probed_path == path;
                                          return Expected<std::optional<std::string>>(std::nullopt);
                                      } });
    ASSERT_TRUE(taken) << taken.error().message();
    EXPECT_TRUE(probed);
}

TEST_F(UnixSocketTest, TooLongPath_IsRefusedNamingThePathAndTheLimit) {
    std::string const long_path = directory + "/" + std::string(MAX_UNIX_SOCKET_PATH, 'a');
    auto listener = UnixListener::listen(long_path, { .what = "test socket" });
    ASSERT_FALSE(listener);
    EXPECT_NE(listener.error().message().find(long_path), std::string::npos) << listener.error().message();
    EXPECT_NE(listener.error().message().find(std::to_string(MAX_UNIX_SOCKET_PATH)), std::string::npos)
        << listener.error().message();
    EXPECT_FALSE(connect_unix_socket(long_path));
    EXPECT_FALSE(unix_socket_address(""));
    EXPECT_FALSE(unix_socket_address(std::string("a\0b", 3)));
    // The longest path that fits is accepted.
    EXPECT_TRUE(unix_socket_address(std::string(MAX_UNIX_SOCKET_PATH, 'a')));
}

TEST_F(UnixSocketTest, Destruction_RemovesOnlyItsOwnSocketFile) {
    { auto listener = MUST(UnixListener::listen(path)); }
    EXPECT_FALSE(std::filesystem::exists(path)) << "the listener's own file stays behind";

    auto replaced = MUST(UnixListener::listen(path));
    ino_t const first_inode = inode_of(path);
    // Someone else takes the path over (removes the file and binds their own).
    ASSERT_EQ(::unlink(path.c_str()), 0);
    auto successor = MUST(UnixListener::listen(path));
    ASSERT_NE(inode_of(path), first_inode);
    replaced.close();
    EXPECT_TRUE(std::filesystem::is_socket(path)) << "the successor's socket file was removed";
    EXPECT_TRUE(connect_unix_socket(path));
}

TEST_F(UnixSocketTest, ReleasedListenerLeavesTheFileToTheNewOwner) {
    UniqueFd fd;
    {
        auto listener = MUST(UnixListener::listen(path));
        fd = listener.release();
    }
    EXPECT_TRUE(std::filesystem::is_socket(path));
    EXPECT_TRUE(connect_unix_socket(path));
}

TEST_F(UnixSocketTest, ConnectWithAWait_TimesOutOnAFullBacklogAndFailsAtOnceWithoutListener) {
    auto failed = connect_unix_socket(path, 1000ms);
    ASSERT_FALSE(failed);
    EXPECT_EQ(failed.error().error_number(), ENOENT) << failed.error().message();
    EXPECT_NE(failed.error().message().find(path), std::string::npos);

    auto listener = MUST(UnixListener::listen(path, { .backlog = 0 }));
    std::vector<UniqueFd> queued;
    while (queued.size() < 64) {
        auto connected = connect_unix_socket(path, UnixConnectOptions { .non_blocking = true });
        if (!connected)
            break;
        queued.push_back(std::move(*connected));
    }
    auto const started = std::chrono::steady_clock::now();
    auto timed_out = connect_unix_socket(path, 50ms);
    ASSERT_FALSE(timed_out);
    EXPECT_EQ(timed_out.error().error_number(), ETIMEDOUT) << timed_out.error().message();
    EXPECT_GE(std::chrono::steady_clock::now() - started, 50ms);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

} // namespace
} // namespace kvmm

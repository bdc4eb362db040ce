#include "devices/virtio/vsock/vsock_host_socket.h"

#include "base/testing/scoped_umask.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kvmm::virtio::vsock {
namespace {

TEST(ParseConnectLine, AcceptsDecimalPort) {
    EXPECT_EQ(parse_connect_line("CONNECT 52"), 52u);
    EXPECT_EQ(parse_connect_line("CONNECT 4294967295"), 4294967295u);
}

TEST(ParseConnectLine, MalformedLines_AreRejected) {
    EXPECT_FALSE(parse_connect_line(""));
    EXPECT_FALSE(parse_connect_line("CONNECT"));
    EXPECT_FALSE(parse_connect_line("CONNECT "));
    EXPECT_FALSE(parse_connect_line("CONNECT -1"));
    EXPECT_FALSE(parse_connect_line("CONNECT +1"));
    EXPECT_FALSE(parse_connect_line("CONNECT  1"));
    EXPECT_FALSE(parse_connect_line("CONNECT 1 "));
    EXPECT_FALSE(parse_connect_line("CONNECT 1x"));
    EXPECT_FALSE(parse_connect_line("CONNECT 4294967296"));
    EXPECT_FALSE(parse_connect_line("connect 1"));
}

class ListenUnixTest : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/kvmm-vsock-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        directory = pattern;
        path = directory + "/v.sock";
    }
    void TearDown() override { std::filesystem::remove_all(directory); }

    std::string directory;
    std::string path;
};

TEST_F(ListenUnixTest, SocketFileIsOwnerOnlyEvenUnderAnOpenUmask) {
    kvmm::testing::ScopedUmask const open_umask(0);
    auto listener = listen_unix(path);
    ASSERT_TRUE(listener) << listener.error().message();
    struct stat status {};
    ASSERT_EQ(::stat(path.c_str(), &status), 0);
    EXPECT_TRUE(S_ISSOCK(status.st_mode));
    EXPECT_EQ(status.st_mode & 07777, 0600u);
}

TEST_F(ListenUnixTest, LivePath_IsRefused) {
    auto first = listen_unix(path);
    ASSERT_TRUE(first) << first.error().message();
    auto second = listen_unix(path);
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().message().find("in use"), std::string::npos);
}

TEST_F(ListenUnixTest, StaleSocketFile_IsReplaced) {
    {
        auto first = listen_unix(path);
        ASSERT_TRUE(first);
    } // closed: the file stays behind, nobody listens
    ASSERT_TRUE(std::filesystem::exists(path));
    auto second = listen_unix(path);
    ASSERT_TRUE(second) << second.error().message();
    auto client = connect_unix(path);
    EXPECT_TRUE(client) << client.error().message();
}

TEST_F(ListenUnixTest, RegularFileAtPath_IsNotRemoved) {
    int const fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
    EXPECT_FALSE(listen_unix(path));
    EXPECT_TRUE(std::filesystem::is_regular_file(path));
}

TEST_F(ListenUnixTest, OverlongPath_IsAnError) {
    EXPECT_FALSE(listen_unix(directory + "/" + std::string(200, 'a')));
    EXPECT_FALSE(connect_unix(directory + "/" + std::string(200, 'a')));
}

TEST_F(ListenUnixTest, ConnectWithoutListener_Fails) { EXPECT_FALSE(connect_unix(path)); }

} // namespace
} // namespace kvmm::virtio::vsock

#include "vmm/console_server.h"

#include "base/testing/scoped_umask.h"
#include "base/testing/temporary_directory.h"

#include "vmm/vm_config.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace kvmm {
namespace {

class ConsoleServerTest : public ::testing::Test {
protected:
    void SetUp() override { m_loop.emplace(MUST(EventLoop::create())); }

    UniqueFd connect_client() {
        auto connected = connect_unix_socket(m_socket_path);
        EXPECT_TRUE(connected) << connected.error().message();
        return connected ? std::move(*connected) : UniqueFd();
    }

    // Runs the loop until `done` or a second has passed.
    void run_until(std::function<bool()> const& done) {
        for (int i = 0; i < 100 && !done(); ++i)
            ASSERT_TRUE(m_loop->run_once(std::chrono::milliseconds(10)));
    }

    static std::string read_available(int fd, size_t want) {
        std::string text;
        while (text.size() < want) {
            char buffer[4096];
            ssize_t received = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
            if (received <= 0)
                break;
            text.append(buffer, static_cast<size_t>(received));
        }
        return text;
    }

    testing::TemporaryDirectory m_directory { "kvmm-console-test" };
    std::string m_socket_path = m_directory / "console.sock";
    std::optional<EventLoop> m_loop;
};

std::span<uint8_t const> bytes_of(std::string_view text) {
    return { reinterpret_cast<uint8_t const*>(text.data()), text.size() };
}

TEST_F(ConsoleServerTest, Create_SocketFileIsOwnerOnlyAndRemovedOnDestruction) {
    {
        kvmm::testing::ScopedUmask const open_umask(0); // the mode must not depend on the umask
        auto server = MUST(ConsoleServer::create(m_socket_path, *m_loop, nullptr));
        struct stat status {};
        ASSERT_EQ(::stat(m_socket_path.c_str(), &status), 0);
        EXPECT_TRUE(S_ISSOCK(status.st_mode));
        EXPECT_EQ(status.st_mode & 0777, 0600u);
    }
    EXPECT_FALSE(std::filesystem::exists(m_socket_path));
}

TEST_F(ConsoleServerTest, Output_ReachesEveryConnectedClient) {
    auto server = MUST(ConsoleServer::create(m_socket_path, *m_loop, nullptr));
    auto sink = server->make_sink();
    auto first = connect_client();
    auto second = connect_client();
    run_until([&] { return server->client_count() == 2; });
    ASSERT_EQ(server->client_count(), 2u);
    sink->write(bytes_of("guest says hi\n"));
    run_until([] { return false; });
    EXPECT_EQ(read_available(first.get(), 14), "guest says hi\n");
    EXPECT_EQ(read_available(second.get(), 14), "guest says hi\n");
}

TEST_F(ConsoleServerTest, EachNewClient_GetsTheRecentOutputThenWhatFollows) {
    auto server = MUST(ConsoleServer::create(m_socket_path, *m_loop, nullptr));
    auto sink = server->make_sink();
    sink->write(bytes_of("boot\n"));
    auto first = connect_client();
    run_until([&] { return server->client_count() == 1; });
    run_until([] { return false; });
    EXPECT_EQ(read_available(first.get(), 5), "boot\n");
    sink->write(bytes_of("prompt$ "));
    auto second = connect_client();
    run_until([&] { return server->client_count() == 2; });
    sink->write(bytes_of("later\n"));
    run_until([] { return false; });
    EXPECT_EQ(read_available(second.get(), 19), "boot\nprompt$ later\n");
    EXPECT_EQ(read_available(first.get(), 14), "prompt$ later\n");
}

TEST_F(ConsoleServerTest, History_KeepsOnlyTheMostRecentOutput) {
    auto server = MUST(ConsoleServer::create(m_socket_path, *m_loop, nullptr));
    auto sink = server->make_sink();
    std::string output;
    for (size_t i = 0; output.size() < ConsoleServer::HISTORY_CAPACITY + 1000; ++i)
        output += fmt::format("line {}\n", i);
    // In pieces of every size, as a serial port (one byte) or a virtio console (a buffer) writes.
    for (size_t offset = 0, piece = 1; offset < output.size(); offset += piece, piece = piece % 97 + 1)
        sink->write(bytes_of(std::string_view(output).substr(offset, piece)));
    auto client = connect_client();
    run_until([&] { return server->client_count() == 1; });
    run_until([] { return false; });
    auto const expected = output.substr(output.size() - ConsoleServer::HISTORY_CAPACITY);
    EXPECT_EQ(read_available(client.get(), expected.size()), expected);
}

TEST_F(ConsoleServerTest, Input_FromClientGoesToTheGuestAsFastAsItAccepts) {
    std::string received;
    size_t accept_per_call = 3;
    auto server = MUST(ConsoleServer::create(m_socket_path, *m_loop, [&](std::span<uint8_t const> bytes) {
        size_t taken = std::min(accept_per_call, bytes.size());
        received.append(reinterpret_cast<char const*>(bytes.data()), taken);
        return taken;
    }));
    auto client = connect_client();
    ASSERT_EQ(::send(client.get(), "ls -l\n", 6, 0), 6);
    run_until([&] { return !received.empty(); });
    EXPECT_EQ(received, "ls ");
    EXPECT_TRUE(server->has_pending_input());
    server->flush_pending_input();
    EXPECT_EQ(received, "ls -l\n");
    EXPECT_FALSE(server->has_pending_input());
}

TEST_F(ConsoleServerTest, SlowClient_LosesOutputBeyondItsBufferInsteadOfBlocking) {
    auto server = MUST(ConsoleServer::create(m_socket_path, *m_loop, nullptr));
    auto sink = server->make_sink();
    auto client = connect_client();
    int const small = 4096;
    ::setsockopt(client.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    run_until([&] { return server->client_count() == 1; });
    std::string const chunk(64 * 1024, 'x');
    // Nothing reads the client while 1 MiB is written: every write returns at once.
    for (int i = 0; i < 16; ++i)
        sink->write(bytes_of(chunk));
    run_until([] { return false; });
    EXPECT_GT(server->dropped_bytes(), 0u);
    EXPECT_LE(server->dropped_bytes(), 16u * chunk.size());
}

TEST_F(ConsoleServerTest, DisconnectedClient_IsForgotten) {
    auto server = MUST(ConsoleServer::create(m_socket_path, *m_loop, nullptr));
    {
        auto client = connect_client();
        run_until([&] { return server->client_count() == 1; });
    }
    run_until([&] { return server->client_count() == 0; });
    EXPECT_EQ(server->client_count(), 0u);
}

TEST_F(ConsoleServerTest, LiveSocket_IsNotTakenOver) {
    auto server = MUST(ConsoleServer::create(m_socket_path, *m_loop, nullptr));
    auto second = ConsoleServer::create(m_socket_path, *m_loop, nullptr);
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().message().find("in use"), std::string::npos) << second.error().message();
}

TEST_F(ConsoleServerTest, StaleSocket_IsReplaced) {
    {
        UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM, 0));
        sockaddr_un address {};
        address.sun_family = AF_UNIX;
        std::strncpy(address.sun_path, m_socket_path.c_str(), sizeof(address.sun_path) - 1);
        ASSERT_EQ(::bind(stale.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)), 0);
    }
    EXPECT_TRUE(ConsoleServer::create(m_socket_path, *m_loop, nullptr));
}

TEST(ConsoleConfigTest, SocketOption_ParsesPathAndRejectsEmpty) {
    auto parsed = MUST(ConsoleConfig::parse("socket=/run/vm.console"));
    EXPECT_EQ(parsed.kind, ConsoleConfig::Kind::Socket);
    EXPECT_EQ(parsed.path, "/run/vm.console");
    EXPECT_FALSE(ConsoleConfig::parse("socket="));
}

} // namespace
} // namespace kvmm

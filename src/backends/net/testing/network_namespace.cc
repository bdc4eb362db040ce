#include "backends/net/testing/network_namespace.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace kvmm::testing {

namespace {

// The child's exit status that means "skipped, the reason is in the pipe" (the automake
// convention for a skipped test).
constexpr int SKIP_EXIT_CODE = 77;

} // namespace

void run_in_network_namespace(std::function<void()> const& body) {
    int reason_pipe[2];
    ASSERT_EQ(::pipe2(reason_pipe, O_CLOEXEC), 0) << std::strerror(errno);
    // Output buffered before the fork would otherwise be printed twice.
    std::fflush(stdout);
    std::fflush(stderr);
    pid_t const child = ::fork();
    ASSERT_GE(child, 0) << std::strerror(errno);
    if (child == 0) {
        ::close(reason_pipe[0]);
        auto skip = [&](std::string const& reason) {
            (void)!::write(reason_pipe[1], reason.data(), reason.size());
            ::_exit(SKIP_EXIT_CODE);
        };
        if (::unshare(CLONE_NEWNET) != 0)
            skip(std::string("unshare(CLONE_NEWNET) failed (needs CAP_SYS_ADMIN): ") + std::strerror(errno));
        if (::access("/dev/net/tun", R_OK | W_OK) != 0)
            skip(std::string("/dev/net/tun is not usable: ") + std::strerror(errno));
        body();
        std::fflush(stdout);
        std::fflush(stderr);
        ::_exit(::testing::Test::HasFailure() ? 1 : 0);
    }
    ::close(reason_pipe[1]);
    std::string reason;
    char buffer[256];
    ssize_t count;
    while ((count = ::read(reason_pipe[0], buffer, sizeof(buffer))) > 0)
        reason.append(buffer, static_cast<size_t>(count));
    ::close(reason_pipe[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child) << std::strerror(errno);
    ASSERT_TRUE(WIFEXITED(status)) << "test child died with signal " << WTERMSIG(status);
    if (WEXITSTATUS(status) == SKIP_EXIT_CODE)
        GTEST_SKIP() << reason;
    EXPECT_EQ(WEXITSTATUS(status), 0) << "the test child reported failures (printed above)";
}

void configure_interface(std::string const& name, char const* ipv4_address, std::optional<int> mtu) {
    int const socket_fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(socket_fd, 0) << std::strerror(errno);
    ifreq request {};
    std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (ipv4_address) {
        auto set_ipv4 = [&](unsigned long command, char const* text) {
            sockaddr_in ipv4 {};
            ipv4.sin_family = AF_INET;
            ASSERT_EQ(::inet_pton(AF_INET, text, &ipv4.sin_addr), 1);
            std::memcpy(&request.ifr_addr, &ipv4, sizeof(ipv4));
            ASSERT_EQ(::ioctl(socket_fd, command, &request), 0) << text << ": " << std::strerror(errno);
        };
        ASSERT_NO_FATAL_FAILURE(set_ipv4(SIOCSIFADDR, ipv4_address));
        ASSERT_NO_FATAL_FAILURE(set_ipv4(SIOCSIFNETMASK, "255.255.255.0"));
    }
    if (mtu) {
        request.ifr_mtu = *mtu;
        ASSERT_EQ(::ioctl(socket_fd, SIOCSIFMTU, &request), 0) << std::strerror(errno);
    }
    ASSERT_EQ(::ioctl(socket_fd, SIOCGIFFLAGS, &request), 0) << std::strerror(errno);
    request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
    ASSERT_EQ(::ioctl(socket_fd, SIOCSIFFLAGS, &request), 0) << std::strerror(errno);
    ::close(socket_fd);
}

} // namespace kvmm::testing

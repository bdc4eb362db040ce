// Tests of Tap against the real kernel. Everything that creates or configures an
// interface runs in a forked child inside a fresh network namespace
// (unshare(CLONE_NEWNET)), so the host's network is never touched; where the
// namespace cannot be made (no CAP_SYS_ADMIN, no /dev/net/tun) the test is skipped.
#include "backends/net/offloads.h"
#include "backends/net/tap.h"
#include "backends/net/testing/network_namespace.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace kvmm {
namespace {

constexpr int FRAME_WAIT_MS = 2000;
constexpr size_t VNET_HEADER_SIZE = Tap::VIRTIO_NET_HEADER_SIZE;
constexpr size_t ETHERNET_HEADER_SIZE = 14;
constexpr uint16_t ETHERTYPE_ARP = 0x0806;
constexpr uint16_t ETHERTYPE_LOCAL_EXPERIMENTAL = 0x88b5; // IEEE 802 local experimental ethertype 1

using Frame = std::vector<uint8_t>;
using testing::configure_interface;
using testing::run_in_network_namespace;

bool wait_readable(int fd, int timeout_ms) {
    pollfd entry { fd, POLLIN, 0 };
    return ::poll(&entry, 1, timeout_ms) == 1 && (entry.revents & POLLIN);
}

uint16_t ethertype_of(Frame const& frame, size_t offset) {
    return static_cast<uint16_t>(frame[offset + 12] << 8 | frame[offset + 13]);
}

// Writes `frame` to the TAP behind an all-zero virtio-net header (no offloads).
void write_frame(Tap const& tap, Frame const& frame) {
    std::array<uint8_t, VNET_HEADER_SIZE> header {};
    std::array<iovec const, 2> buffers { iovec { header.data(), header.size() },
                                         iovec { const_cast<uint8_t*>(frame.data()), frame.size() } };
    auto written = tap.write(buffers);
    ASSERT_TRUE(written.has_value()) << written.error().message();
    ASSERT_TRUE(written->has_value()) << "write would block";
    EXPECT_EQ(**written, header.size() + frame.size());
}

// Reads frames from the TAP (vnet header included) until one with `ethertype` arrives;
// other traffic the kernel sends on its own (IPv6 neighbour discovery) is skipped.
Frame read_frame_with_ethertype(Tap const& tap, uint16_t ethertype) {
    auto const deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(FRAME_WAIT_MS);
    while (std::chrono::steady_clock::now() < deadline) {
        if (!wait_readable(tap.fd(), FRAME_WAIT_MS))
            break;
        Frame buffer(VNET_HEADER_SIZE + 1518);
        std::array<iovec const, 1> buffers { iovec { buffer.data(), buffer.size() } };
        auto length = tap.read(buffers);
        if (!length.has_value()) {
            ADD_FAILURE() << length.error().message();
            return {};
        }
        if (!length->has_value())
            continue;
        buffer.resize(**length);
        if (buffer.size() >= VNET_HEADER_SIZE + ETHERNET_HEADER_SIZE &&
            ethertype_of(buffer, VNET_HEADER_SIZE) == ethertype)
            return buffer;
    }
    ADD_FAILURE() << "no frame with ethertype " << ethertype << " within " << FRAME_WAIT_MS << " ms";
    return {};
}

// An fd attached with TUNSETIFF and the given flags, for the from_fd tests.
int attach_raw_tun_fd(char const* name, int flags) {
    int const fd = ::open("/dev/net/tun", O_RDWR);
    if (fd < 0)
        return -1;
    ifreq request {};
    std::strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = static_cast<short>(flags);
    if (::ioctl(fd, TUNSETIFF, &request) < 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

bool contains(std::string const& text, std::string const& part) { return text.find(part) != std::string::npos; }

TEST(TapOpen, NameLongerThanIfnamsizMinusOne_IsRejectedNamingIt) {
    auto tap = Tap::open("kvmm-much-too-long0");
    ASSERT_FALSE(tap.has_value());
    EXPECT_TRUE(contains(tap.error().message(), "'kvmm-much-too-long0'")) << tap.error().message();
    EXPECT_TRUE(contains(tap.error().message(), "at most 15")) << tap.error().message();
}

TEST(TapOpen, EmptyName_IsRejected) { EXPECT_FALSE(Tap::open("").has_value()); }

TEST(TapOpen, InNewNamespace_CreatesNonBlockingCloseOnExecInterface) {
    run_in_network_namespace([] {
        auto tap = Tap::open("kvmmtap0");
        ASSERT_TRUE(tap.has_value()) << tap.error().message();
        EXPECT_EQ(tap->name(), "kvmmtap0");
        EXPECT_NE(::if_nametoindex("kvmmtap0"), 0u);
        EXPECT_NE(::fcntl(tap->fd(), F_GETFL) & O_NONBLOCK, 0);
        EXPECT_NE(::fcntl(tap->fd(), F_GETFD) & FD_CLOEXEC, 0);
    });
}

TEST(TapOpen, InterfaceAlreadyAttached_FailsBusyNamingInterface) {
    run_in_network_namespace([] {
        auto first = Tap::open("kvmmtap0");
        ASSERT_TRUE(first.has_value()) << first.error().message();
        auto second = Tap::open("kvmmtap0");
        ASSERT_FALSE(second.has_value());
        EXPECT_EQ(second.error().error_number(), EBUSY) << second.error().message();
        EXPECT_TRUE(contains(second.error().message(), "'kvmmtap0'")) << second.error().message();
    });
}

TEST(TapRead, NoFrameQueued_ReportsWouldBlock) {
    run_in_network_namespace([] {
        auto tap = Tap::open("kvmmtap0");
        ASSERT_TRUE(tap.has_value()) << tap.error().message();
        std::array<uint8_t, 2048> buffer {};
        std::array<iovec const, 1> buffers { iovec { buffer.data(), buffer.size() } };
        auto result = tap->read(buffers);
        ASSERT_TRUE(result.has_value()) << result.error().message();
        EXPECT_FALSE(result->has_value());
    });
}

TEST(TapWrite, FrameBehindZeroVnetHeader_ArrivesAtPacketSocketUnchanged) {
    run_in_network_namespace([] {
        auto tap = Tap::open("kvmmtap0");
        ASSERT_TRUE(tap.has_value()) << tap.error().message();
        ASSERT_NO_FATAL_FAILURE(configure_interface(tap->name(), nullptr));

        int const packet_socket = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
        ASSERT_GE(packet_socket, 0) << std::strerror(errno);
        sockaddr_ll link {};
        link.sll_family = AF_PACKET;
        link.sll_protocol = htons(ETH_P_ALL);
        link.sll_ifindex = static_cast<int>(::if_nametoindex(tap->name().c_str()));
        ASSERT_EQ(::bind(packet_socket, reinterpret_cast<sockaddr*>(&link), sizeof(link)), 0) << std::strerror(errno);

        // Destination 02:00:00:00:00:01, source 02:00:00:00:00:02, then the ethertype.
        Frame frame { 0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02 };
        frame.push_back(ETHERTYPE_LOCAL_EXPERIMENTAL >> 8);
        frame.push_back(ETHERTYPE_LOCAL_EXPERIMENTAL & 0xff);
        for (char c : std::string("kvmm tap frame payload, padded to the Ethernet minimum"))
            frame.push_back(static_cast<uint8_t>(c));
        ASSERT_NO_FATAL_FAILURE(write_frame(*tap, frame));

        Frame received;
        auto const deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(FRAME_WAIT_MS);
        while (received != frame && std::chrono::steady_clock::now() < deadline) {
            if (!wait_readable(packet_socket, FRAME_WAIT_MS))
                break;
            received.assign(2048, 0);
            ssize_t const length = ::recv(packet_socket, received.data(), received.size(), 0);
            ASSERT_GE(length, 0) << std::strerror(errno);
            received.resize(static_cast<size_t>(length));
        }
        EXPECT_EQ(received, frame);
        ::close(packet_socket);
    });
}

TEST(TapRead, ArpRequestForHostAddress_ReturnsArpReplyBehindVnetHeader) {
    run_in_network_namespace([] {
        auto tap = Tap::open("kvmmtap0");
        ASSERT_TRUE(tap.has_value()) << tap.error().message();
        ASSERT_NO_FATAL_FAILURE(configure_interface(tap->name(), "10.0.0.1"));

        std::array<uint8_t, 6> const guest_mac { 0x02, 0x00, 0x00, 0x00, 0x00, 0x02 };
        std::array<uint8_t, 4> const guest_ip { 10, 0, 0, 2 };
        std::array<uint8_t, 4> const host_ip { 10, 0, 0, 1 };
        Frame request { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
        request.insert(request.end(), guest_mac.begin(), guest_mac.end());
        // ARP (RFC 826) for Ethernet/IPv4: htype 1, ptype 0x0800, hlen 6, plen 4, opcode 1 (request).
        for (uint8_t byte : std::array<uint8_t, 10> { 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01 })
            request.push_back(byte);
        request.insert(request.end(), guest_mac.begin(), guest_mac.end());
        request.insert(request.end(), guest_ip.begin(), guest_ip.end());
        request.insert(request.end(), 6, 0);
        request.insert(request.end(), host_ip.begin(), host_ip.end());
        ASSERT_NO_FATAL_FAILURE(write_frame(*tap, request));

        Frame const reply = read_frame_with_ethertype(*tap, ETHERTYPE_ARP);
        ASSERT_GE(reply.size(), VNET_HEADER_SIZE + ETHERNET_HEADER_SIZE + 28);
        // The kernel hands over a plain frame: no checksum offload, GSO_NONE.
        EXPECT_EQ(reply[0], 0); // flags
        EXPECT_EQ(reply[1], 0); // gso_type
        uint8_t const* const ethernet = reply.data() + VNET_HEADER_SIZE;
        uint8_t const* const arp = ethernet + ETHERNET_HEADER_SIZE;
        EXPECT_TRUE(std::equal(guest_mac.begin(), guest_mac.end(), ethernet)) << "reply not addressed to the sender";
        EXPECT_EQ(arp[6], 0);
        EXPECT_EQ(arp[7], 2) << "ARP opcode is not reply";
        EXPECT_TRUE(std::equal(host_ip.begin(), host_ip.end(), arp + 14)) << "sender is not 10.0.0.1";
        EXPECT_TRUE(std::equal(guest_mac.begin(), guest_mac.end(), arp + 18));
        EXPECT_TRUE(std::equal(guest_ip.begin(), guest_ip.end(), arp + 24));

        // The sender hardware address is the TAP's own MAC.
        int const socket_fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ifreq hardware {};
        std::strncpy(hardware.ifr_name, tap->name().c_str(), IFNAMSIZ - 1);
        ASSERT_EQ(::ioctl(socket_fd, SIOCGIFHWADDR, &hardware), 0) << std::strerror(errno);
        ::close(socket_fd);
        EXPECT_EQ(std::memcmp(arp + 8, hardware.ifr_hwaddr.sa_data, 6), 0);
    });
}

TEST(TapSetVnetHeaderSize, BelowLegacyHeaderSize_FailsNamingSize) {
    run_in_network_namespace([] {
        auto tap = Tap::open("kvmmtap0");
        ASSERT_TRUE(tap.has_value()) << tap.error().message();
        EXPECT_TRUE(tap->set_vnet_header_size(10).has_value());
        auto too_small = tap->set_vnet_header_size(4);
        ASSERT_FALSE(too_small.has_value());
        EXPECT_TRUE(contains(too_small.error().message(), "4 bytes")) << too_small.error().message();
    });
}

TEST(TapSetOffloads, MappedGuestFeatures_AcceptedAndTsoWithoutChecksumRejected) {
    run_in_network_namespace([] {
        auto tap = Tap::open("kvmmtap0");
        ASSERT_TRUE(tap.has_value()) << tap.error().message();
        using namespace virtio_net_feature;
        uint64_t const all =
            (1u << GUEST_CSUM) | (1u << GUEST_TSO4) | (1u << GUEST_TSO6) | (1u << GUEST_ECN) | (1u << GUEST_UFO);
        auto accepted = tap->set_offloads(tun_offloads_for_guest_features(all));
        EXPECT_TRUE(accepted.has_value()) << accepted.error().message();
        EXPECT_TRUE(tap->set_offloads(0).has_value());
        auto rejected = tap->set_offloads(TUN_F_TSO4);
        ASSERT_FALSE(rejected.has_value());
        EXPECT_EQ(rejected.error().error_number(), EINVAL);
        EXPECT_TRUE(contains(rejected.error().message(), "0x2")) << rejected.error().message();
    });
}

TEST(TapFromFd, AttachedTapFd_IsAdoptedNonBlockingWithKernelName) {
    run_in_network_namespace([] {
        int const fd = attach_raw_tun_fd("kvmmtap7", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        ASSERT_GE(fd, 0) << std::strerror(errno);
        ASSERT_EQ(::fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
        auto tap = Tap::from_fd(fd);
        ASSERT_TRUE(tap.has_value()) << tap.error().message();
        EXPECT_EQ(tap->fd(), fd);
        EXPECT_EQ(tap->name(), "kvmmtap7");
        EXPECT_NE(::fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
        EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
        // The IFF_NO_PI probe must not leave its socket filter behind (IFF_NOFILTER set again).
        ifreq request {};
        ASSERT_EQ(::ioctl(fd, TUNGETIFF, &request), 0) << std::strerror(errno);
        EXPECT_NE(request.ifr_flags & IFF_NOFILTER, 0);
        std::array<uint8_t, 2048> buffer {};
        std::array<iovec const, 1> buffers { iovec { buffer.data(), buffer.size() } };
        auto result = tap->read(buffers);
        ASSERT_TRUE(result.has_value()) << result.error().message();
        EXPECT_FALSE(result->has_value());
    });
}

TEST(TapFromFd, TunFdsWithoutTapNoPiOrVnetHeader_AreRejectedAndLeftOpen) {
    run_in_network_namespace([] {
        struct Case {
            char const* name;
            int flags;
            char const* expected_text;
        };
        for (Case const& c : { Case { "kvmmtun0", IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, "not a TAP" },
                               Case { "kvmmtap1", IFF_TAP | IFF_VNET_HDR, "IFF_NO_PI" },
                               Case { "kvmmtap2", IFF_TAP | IFF_NO_PI, "IFF_VNET_HDR" } }) {
            int const fd = attach_raw_tun_fd(c.name, c.flags);
            ASSERT_GE(fd, 0) << c.name << ": " << std::strerror(errno);
            auto tap = Tap::from_fd(fd);
            ASSERT_FALSE(tap.has_value()) << c.name;
            EXPECT_TRUE(contains(tap.error().message(), c.expected_text)) << tap.error().message();
            EXPECT_TRUE(contains(tap.error().message(), c.name)) << tap.error().message();
            EXPECT_EQ(::close(fd), 0) << "the rejected fd must stay open and owned by the caller";
        }
        int const unattached = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        ASSERT_GE(unattached, 0) << std::strerror(errno);
        auto tap = Tap::from_fd(unattached);
        ASSERT_FALSE(tap.has_value());
        EXPECT_TRUE(contains(tap.error().message(), "not yet attached")) << tap.error().message();
        ::close(unattached);
    });
}

TEST(TapFromFd, Pipe_IsRejectedAndLeftOpen) {
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0) << std::strerror(errno);
    auto tap = Tap::from_fd(pipe_fds[0]);
    ASSERT_FALSE(tap.has_value());
    EXPECT_TRUE(contains(tap.error().message(), "TUNGETIFF")) << tap.error().message();
    EXPECT_EQ(::close(pipe_fds[0]), 0) << "the rejected fd must stay open and owned by the caller";
    ::close(pipe_fds[1]);
}

TEST(TapFromFd, NegativeFd_IsRejected) { EXPECT_FALSE(Tap::from_fd(-1).has_value()); }

} // namespace
} // namespace kvmm

#include "devices/virtio/vsock/vsock_test_fixture.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <sys/socket.h>
#include <unistd.h>

namespace kvmm::virtio::vsock {
namespace {

using namespace test_support;

TEST_F(VsockDeviceTest, ConfigSpace_HoldsGuestCid) {
    EXPECT_EQ(driver->read32(MmioTransport::CONFIG_OFFSET), GUEST_CID);
    EXPECT_EQ(driver->read32(MmioTransport::CONFIG_OFFSET + 4), 0u);
    EXPECT_EQ(driver->read32(0x08), static_cast<uint32_t>(DeviceType::Vsock));
}

TEST_F(VsockDeviceTest, HostInitiatedConnect_HandshakeThenDataBothWays) {
    activate();
    post_rx_buffers(8);
    auto [client, request] = host_connect(1234);
    EXPECT_EQ(request.operation, static_cast<uint16_t>(Operation::Request));
    EXPECT_EQ(request.destination_port, 1234u);
    EXPECT_EQ(request.source_port, VsockDevice::FIRST_HOST_PORT);
    EXPECT_EQ(request.type, TYPE_STREAM);
    EXPECT_EQ(request.buffer_allocation, Connection::BUFFER_SIZE);

    send(guest_header(Operation::Response, 1234, request.source_port));
    EXPECT_EQ(receive(client.get()), fmt::format("OK {}\n", VsockDevice::FIRST_HOST_PORT));
    EXPECT_EQ(vsock->connections_opened(), 1u);

    send_all(client.get(), "hello guest");
    run();
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::ReadWrite));
    EXPECT_EQ(packets[0].header.destination_port, 1234u);
    EXPECT_EQ(packets[0].payload, "hello guest");

    send(guest_header(Operation::ReadWrite, 1234, request.source_port, 10), "hello host");
    EXPECT_EQ(receive(client.get()), "hello host");
    EXPECT_EQ(vsock->bytes_to_host(), 10u);
    EXPECT_EQ(vsock->bytes_to_guest(), 11u);
}

TEST_F(VsockDeviceTest, HostConnects_GetIncreasingHostPorts) {
    activate();
    post_rx_buffers(4);
    auto [first, first_request] = host_connect(5);
    auto [second, second_request] = host_connect(5);
    EXPECT_EQ(first_request.source_port, VsockDevice::FIRST_HOST_PORT);
    EXPECT_EQ(second_request.source_port, VsockDevice::FIRST_HOST_PORT + 1);
}

TEST_F(VsockDeviceTest, GuestResetOfRequest_ClosesClient) {
    activate();
    post_rx_buffers(4);
    auto [client, request] = host_connect(77);
    send(guest_header(Operation::Reset, 77, request.source_port));
    EXPECT_TRUE(at_end_of_stream(client.get()));
    EXPECT_EQ(vsock->active_connections(), 0u);
}

TEST_F(VsockDeviceTest, MalformedConnectLine_ClosesClientWithoutRequest) {
    activate();
    post_rx_buffers(2);
    auto client = connect_blocking(uds_path);
    send_all(client.get(), "HELLO 5\n");
    run();
    EXPECT_TRUE(at_end_of_stream(client.get()));
    EXPECT_TRUE(received().empty());
}

TEST_F(VsockDeviceTest, HostConnectBeforeActivation_IsRefused) {
    auto client = connect_blocking(uds_path);
    run();
    EXPECT_TRUE(at_end_of_stream(client.get()));
    EXPECT_EQ(vsock->connections_refused(), 1u);
}

TEST_F(VsockDeviceTest, DataAfterConnectLine_StaysForTheGuest) {
    activate();
    post_rx_buffers(4);
    auto client = connect_blocking(uds_path);
    send_all(client.get(), "CONNECT 9\nearly bytes");
    run();
    auto packets = received();
    ASSERT_EQ(packets.size(), 1u);
    send(guest_header(Operation::Response, 9, packets[0].header.source_port));
    EXPECT_EQ(receive(client.get()), fmt::format("OK {}\n", packets[0].header.source_port));
    packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].payload, "early bytes");
}

TEST_F(VsockDeviceTest, GuestInitiatedConnect_ReachesPortSocketAndCarriesData) {
    activate();
    post_rx_buffers(8);
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    ASSERT_TRUE(server.is_valid());

    send(guest_header(Operation::ReadWrite, 1025, 52, 4), "ping");
    EXPECT_EQ(receive(server.get()), "ping");

    send_all(server.get(), "pong");
    run();
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.source_port, 52u);
    EXPECT_EQ(packets[0].header.destination_port, 1025u);
    EXPECT_EQ(packets[0].payload, "pong");
}

TEST_F(VsockDeviceTest, GuestConnectWithoutListener_GetsReset) {
    activate();
    post_rx_buffers(2);
    send(guest_header(Operation::Request, 1025, 53));
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::Reset));
    EXPECT_EQ(packets[0].header.source_port, 53u);
    EXPECT_EQ(packets[0].header.destination_port, 1025u);
    EXPECT_EQ(vsock->active_connections(), 0u);
}

TEST_F(VsockDeviceTest, SmallGuestCredit_IsNeverExceeded) {
    guest_buffer_allocation = 100;
    activate();
    post_rx_buffers(8);
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    send_all(server.get(), std::string(1000, 'x'));
    run();
    auto packets = received();
    size_t delivered = 0;
    for (auto const& packet : packets)
        if (packet.header.operation == static_cast<uint16_t>(Operation::ReadWrite))
            delivered += packet.payload.size();
    EXPECT_EQ(delivered, 100u);

    // The guest consumed 60 bytes: exactly 60 more may come.
    guest_forward_count = 60;
    send(guest_header(Operation::CreditUpdate, 1025, 52));
    packets = received();
    delivered = 0;
    for (auto const& packet : packets)
        if (packet.header.operation == static_cast<uint16_t>(Operation::ReadWrite))
            delivered += packet.payload.size();
    EXPECT_EQ(delivered, 60u);
}

TEST_F(VsockDeviceTest, GuestDataBeyondOurCredit_ResetsConnection) {
    activate();
    post_rx_buffers(4);
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    // Fill the host socket so nothing drains, then overrun the advertised buffer.
    std::string const chunk(VsockDevice::MAX_PACKET_PAYLOAD, 'y');
    bool reset_seen = false;
    for (int i = 0; i < 64 && !reset_seen; ++i) {
        send(guest_header(Operation::ReadWrite, 1025, 52, static_cast<uint32_t>(chunk.size())), chunk);
        for (auto const& packet : received())
            reset_seen |= packet.header.operation == static_cast<uint16_t>(Operation::Reset);
        post_rx_buffers(1);
    }
    EXPECT_TRUE(reset_seen);
    EXPECT_EQ(vsock->active_connections(), 0u);
    // What was accepted stayed within the advertised buffer plus what the socket took.
    EXPECT_GT(vsock->bytes_to_host(), 0u);
}

TEST_F(VsockDeviceTest, CreditRequest_IsAnsweredWithCreditUpdate) {
    activate();
    post_rx_buffers(4);
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    send(guest_header(Operation::ReadWrite, 1025, 52, 3), "abc");
    ASSERT_EQ(receive(server.get()), "abc");
    send(guest_header(Operation::CreditRequest, 1025, 52));
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::CreditUpdate));
    EXPECT_EQ(packets[0].header.forward_count, 3u);
    EXPECT_EQ(packets[0].header.buffer_allocation, Connection::BUFFER_SIZE);
}

TEST_F(VsockDeviceTest, GuestShutdown_HalfClosesThenResetsOnFullShutdown) {
    activate();
    post_rx_buffers(4);
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    auto shutdown = guest_header(Operation::Shutdown, 1025, 52);
    shutdown.flags = SHUTDOWN_SEND;
    send(shutdown);
    EXPECT_TRUE(at_end_of_stream(server.get()));
    EXPECT_EQ(vsock->active_connections(), 1u);
    shutdown.flags = SHUTDOWN_SEND | SHUTDOWN_RECEIVE;
    send(shutdown);
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::Reset));
    EXPECT_EQ(vsock->active_connections(), 0u);
}

TEST_F(VsockDeviceTest, HostClose_SendsShutdownToGuest) {
    activate();
    post_rx_buffers(4);
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    server.reset();
    run();
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::Shutdown));
    EXPECT_EQ(packets[0].header.flags, SHUTDOWN_SEND);
}

TEST_F(VsockDeviceTest, WrongSourceOrDestinationCid_IsDropped) {
    activate();
    post_rx_buffers(2);
    auto header = guest_header(Operation::Request, 1025, 52);
    header.source_cid = 7;
    send(header);
    header = guest_header(Operation::Request, 1025, 52);
    header.destination_cid = 9;
    send(header);
    EXPECT_TRUE(received().empty());
    EXPECT_EQ(vsock->packets_dropped(), 2u);
    EXPECT_EQ(driver->read32(0x70) & STATUS_DEVICE_NEEDS_RESET, 0u);
}

TEST_F(VsockDeviceTest, LengthBeyondBufferOrBadType_GetsReset) {
    activate();
    post_rx_buffers(4);
    auto header = guest_header(Operation::ReadWrite, 1025, 52, 1000);
    send(header, "short");
    header = guest_header(Operation::Request, 1026, 52);
    header.type = 2; // SEQPACKET was not negotiated
    send(header);
    auto const packets = received();
    ASSERT_EQ(packets.size(), 2u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::Reset));
    EXPECT_EQ(packets[0].header.destination_port, 1025u);
    EXPECT_EQ(packets[1].header.operation, static_cast<uint16_t>(Operation::Reset));
    EXPECT_EQ(packets[1].header.destination_port, 1026u);
    EXPECT_EQ(vsock->packets_dropped(), 2u);
}

TEST_F(VsockDeviceTest, ShortHeaderAndUnknownConnection_AreHandled) {
    activate();
    post_rx_buffers(2);
    send_raw(std::vector<std::byte>(10));
    EXPECT_TRUE(received().empty());
    EXPECT_EQ(vsock->packets_dropped(), 1u);
    send(guest_header(Operation::ReadWrite, 4000, 4001, 1), "z");
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::Reset));
    // An RST for an unknown connection is not answered.
    send(guest_header(Operation::Reset, 4000, 4001));
    EXPECT_TRUE(received().empty());
    EXPECT_EQ(driver->read32(0x70) & STATUS_DEVICE_NEEDS_RESET, 0u);
}

TEST_F(VsockDeviceTest, DeviceReset_ClosesHostSockets) {
    activate();
    post_rx_buffers(4);
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    auto [client, request] = host_connect(8);
    send(guest_header(Operation::Response, 8, request.source_port));
    ASSERT_EQ(receive(client.get()), fmt::format("OK {}\n", request.source_port));
    ASSERT_EQ(vsock->active_connections(), 2u);
    driver->write32(0x70, 0);
    run();
    EXPECT_EQ(vsock->active_connections(), 0u);
    EXPECT_TRUE(at_end_of_stream(server.get()));
    EXPECT_TRUE(at_end_of_stream(client.get()));
}

TEST_F(VsockDeviceTest, ResetsWaitForRxBuffers) {
    activate();
    send(guest_header(Operation::Request, 1025, 53)); // no listener: RST, but no rx buffer yet
    EXPECT_TRUE(received().empty());
    post_rx_buffers(1);
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::Reset));
}

TEST_F(VsockDeviceTest, GuestConnectionOnNextHostPort_DoesNotBreakLaterHostConnects) {
    activate();
    post_rx_buffers(16);
    // The guest takes the key the next host-initiated connection to guest port 1234 would get.
    UniqueFd listener;
    auto server = guest_connect(1234, VsockDevice::FIRST_HOST_PORT, listener);
    ASSERT_TRUE(server.is_valid());
    ASSERT_EQ(vsock->active_connections(), 1u);

    std::vector<UniqueFd> clients;
    for (int attempt = 0; attempt < 3; ++attempt) {
        auto [client, request] = host_connect(1234);
        if (request.operation != static_cast<uint16_t>(Operation::Request)) {
            ADD_FAILURE() << "host connect " << attempt << " got no REQUEST";
            continue;
        }
        EXPECT_NE(request.source_port, VsockDevice::FIRST_HOST_PORT); // never a live key
        send(guest_header(Operation::Response, 1234, request.source_port));
        EXPECT_EQ(receive(client.get()), fmt::format("OK {}\n", request.source_port));
        clients.push_back(std::move(client));
    }
    EXPECT_EQ(vsock->active_connections(), 4u);
    EXPECT_EQ(vsock->host_port_collisions(), 1u);
    // The guest's own connection is untouched.
    send(guest_header(Operation::ReadWrite, 1234, VsockDevice::FIRST_HOST_PORT, 2), "hi");
    EXPECT_EQ(receive(server.get()), "hi");
}

TEST(VsockDeviceCreate, ReservedCidAndLivePath_AreRejected) {
    auto loop = *EventLoop::create();
    char pattern[] = "/tmp/kvmm-vsock-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    std::string const path = std::string(pattern) + "/v.sock";
    EXPECT_FALSE(VsockDevice::create(loop, 2, path));
    {
        auto first = VsockDevice::create(loop, 3, path);
        ASSERT_TRUE(first);
        auto second = VsockDevice::create(loop, 4, path);
        EXPECT_FALSE(second);
    }
    EXPECT_FALSE(std::filesystem::exists(path)); // removed with the device
    std::filesystem::remove_all(pattern);
}

} // namespace
} // namespace kvmm::virtio::vsock

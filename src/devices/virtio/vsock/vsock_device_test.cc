#include "devices/virtio/vsock/vsock_device.h"

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "devices/virtio/vsock/vsock_host_socket.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace kvmm::virtio::vsock {
namespace {

using testing::DriverQueue;
using testing::MmioDriver;

constexpr uint64_t GUEST_CID = 3;
constexpr uint32_t RX_BUFFER = HEADER_SIZE + 4096;

struct Packet {
    PacketHeader header;
    std::string payload;
};

// A blocking client socket of the test (the host program's side).
UniqueFd connect_blocking(std::string const& path) {
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.data(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(fd.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0)
        ADD_FAILURE() << "connect " << path << ": " << std::strerror(errno);
    return fd;
}

void send_all(int fd, std::string_view data) {
    ASSERT_EQ(::send(fd, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
}

// Reads what is available within a short wait; "" on end of stream or nothing.
std::string receive(int fd, size_t max = 65536) {
    pollfd poll_fd { fd, POLLIN, 0 };
    if (::poll(&poll_fd, 1, 200) <= 0)
        return "";
    std::string data(max, '\0');
    ssize_t const got = ::recv(fd, data.data(), max, MSG_DONTWAIT);
    data.resize(got > 0 ? static_cast<size_t>(got) : 0);
    return data;
}

bool at_end_of_stream(int fd) {
    pollfd poll_fd { fd, POLLIN, 0 };
    if (::poll(&poll_fd, 1, 200) <= 0)
        return false;
    char byte;
    return ::recv(fd, &byte, 1, MSG_DONTWAIT) == 0;
}

class VsockDeviceTest : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/kvmm-vsock-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        directory = pattern;
        uds_path = directory + "/v.sock";
        auto created = VsockDevice::create(loop, GUEST_CID, uds_path);
        ASSERT_TRUE(created) << created.error().message();
        vsock = created->get();
        transport = *MmioTransport::create("vsock", std::move(*created), memory, line, loop);
        driver.emplace(*transport, loop);
    }
    void TearDown() override {
        transport.reset();
        std::filesystem::remove_all(directory);
    }

    void activate() {
        ASSERT_EQ(driver->initialize(feature_bit(FEATURE_RING_EVENT_IDX), { &rx, &tx, &event }) & STATUS_DRIVER_OK,
                  STATUS_DRIVER_OK);
    }

    void post_rx_buffers(int count, uint32_t length = RX_BUFFER) {
        for (int i = 0; i < count; ++i) {
            auto const buffer = rx.writable_buffer(length);
            rx_buffers[rx.add_chain({ buffer })] = buffer.address;
        }
        driver->notify(VsockDevice::RX_QUEUE);
        run();
    }

    void run() { driver->run_event_loop(0); }

    PacketHeader guest_header(Operation operation, uint32_t guest_port, uint32_t host_port, uint32_t length = 0) {
        return PacketHeader { .source_cid = GUEST_CID,
                              .destination_cid = HOST_CID,
                              .source_port = guest_port,
                              .destination_port = host_port,
                              .length = length,
                              .type = TYPE_STREAM,
                              .operation = static_cast<uint16_t>(operation),
                              .buffer_allocation = guest_buffer_allocation,
                              .forward_count = guest_forward_count };
    }

    void send_raw(std::vector<std::byte> bytes) {
        tx.add_chain({ rx.buffer(bytes) });
        driver->notify(VsockDevice::TX_QUEUE);
        run();
    }

    void send(PacketHeader const& header, std::string_view payload = {}) {
        auto const head = encode_header(header);
        std::vector<std::byte> bytes(head.begin(), head.end());
        auto const data = std::as_bytes(std::span(payload.data(), payload.size()));
        bytes.insert(bytes.end(), data.begin(), data.end());
        send_raw(std::move(bytes));
    }

    std::vector<Packet> received() {
        run();
        std::vector<Packet> packets;
        while (auto const used = rx.pop_used()) {
            auto const bytes = rx.read(rx_buffers.at(static_cast<uint16_t>(used->id)), used->length);
            EXPECT_GE(bytes.size(), HEADER_SIZE);
            if (bytes.size() < HEADER_SIZE)
                continue;
            Packet packet { decode_header(std::span(bytes).first<HEADER_SIZE>()), {} };
            packet.payload.assign(reinterpret_cast<char const*>(bytes.data()) + HEADER_SIZE,
                                  bytes.size() - HEADER_SIZE);
            EXPECT_EQ(packet.header.length, packet.payload.size());
            EXPECT_EQ(packet.header.source_cid, HOST_CID);
            EXPECT_EQ(packet.header.destination_cid, GUEST_CID);
            packets.push_back(std::move(packet));
        }
        return packets;
    }

    // Host client connects and asks for guest port `port`; returns the client and the REQUEST.
    std::pair<UniqueFd, PacketHeader> host_connect(uint32_t port) {
        auto client = connect_blocking(uds_path);
        send_all(client.get(), fmt::format("CONNECT {}\n", port));
        run();
        auto packets = received();
        EXPECT_EQ(packets.size(), 1u);
        if (packets.empty())
            return { std::move(client), PacketHeader {} };
        return { std::move(client), packets[0].header };
    }

    // A listener at "<uds_path>_<port>" and a guest connection to it, RESPONSE consumed.
    UniqueFd guest_connect(uint32_t guest_port, uint32_t host_port, UniqueFd& listener) {
        listener = *listen_unix(fmt::format("{}_{}", uds_path, host_port));
        send(guest_header(Operation::Request, guest_port, host_port));
        auto const packets = received();
        EXPECT_EQ(packets.size(), 1u);
        if (!packets.empty()) {
            EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::Response));
        }
        int const fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
        EXPECT_GE(fd, 0);
        return UniqueFd(fd);
    }

    std::string directory;
    std::string uds_path;
    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 8 << 20 } });
    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    VsockDevice* vsock { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
    // Only `rx` hands out data buffers: each DriverQueue's data area runs to the end of memory.
    DriverQueue tx { memory, GuestAddress(0x10000), 256 };
    DriverQueue event { memory, GuestAddress(0x20000), 256 };
    DriverQueue rx { memory, GuestAddress(0x30000), 256 };
    std::map<uint16_t, GuestAddress> rx_buffers;
    uint32_t guest_buffer_allocation { 64 * 1024 };
    uint32_t guest_forward_count { 0 };
};

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

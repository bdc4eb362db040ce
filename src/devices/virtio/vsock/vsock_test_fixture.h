// Test support for the vsock device's unit tests: a device on a mock guest driver
// (driver-side virtqueues in anonymous memory) and the host programs' side of its sockets.
// Threading: one test thread runs the event loop and plays guest and host.
#pragma once

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "devices/virtio/vsock/vsock_device.h"
#include "devices/virtio/vsock/vsock_host_socket.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace kvmm::virtio::vsock::test_support {

using testing::DriverQueue;
using testing::MmioDriver;

inline constexpr uint64_t GUEST_CID = 3;
inline constexpr uint32_t RX_BUFFER = HEADER_SIZE + 4096;

struct Packet {
    PacketHeader header;
    std::string payload;
};

// A blocking client socket of the test (the host program's side).
inline UniqueFd connect_blocking(std::string const& path) {
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.data(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(fd.get(), reinterpret_cast<sockaddr const*>(&address), sizeof(address)) != 0)
        ADD_FAILURE() << "connect " << path << ": " << std::strerror(errno);
    return fd;
}

inline void send_all(int fd, std::string_view data) {
    ASSERT_EQ(::send(fd, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
}

// Reads what is available within a short wait; "" on end of stream or nothing.
inline std::string receive(int fd, size_t max = 65536) {
    pollfd poll_fd { fd, POLLIN, 0 };
    if (::poll(&poll_fd, 1, 200) <= 0)
        return "";
    std::string data(max, '\0');
    ssize_t const got = ::recv(fd, data.data(), max, MSG_DONTWAIT);
    data.resize(got > 0 ? static_cast<size_t>(got) : 0);
    return data;
}

inline bool at_end_of_stream(int fd) {
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
        create_device({});
    }
    void create_device(VsockLimits limits) {
        driver.reset();
        transport.reset();
        auto created = VsockDevice::create(loop, GUEST_CID, uds_path, limits);
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

} // namespace kvmm::virtio::vsock::test_support

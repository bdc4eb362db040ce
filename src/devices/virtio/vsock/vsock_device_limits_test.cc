// The vsock device against hostile guests and host clients: connection caps, handshake and
// response timeouts, accept back-off, and work bounded per wake-up of the event loop.
#include "devices/virtio/vsock/vsock_test_fixture.h"

#include "base/event_fd.h"

#include "base/testing/sanitizers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kvmm::virtio::vsock {
namespace {

using namespace test_support;
using namespace std::chrono_literals;

size_t open_fds() {
    return static_cast<size_t>(
        std::distance(std::filesystem::directory_iterator("/proc/self/fd"), std::filesystem::directory_iterator {}));
}

// The peer closed: end of stream, or a reset when it closed with our bytes unread.
bool peer_closed(int fd) {
    pollfd poll_fd { fd, POLLIN, 0 };
    if (::poll(&poll_fd, 1, 200) <= 0)
        return false;
    char byte;
    ssize_t const got = ::recv(fd, &byte, 1, MSG_DONTWAIT);
    return got == 0 || (got < 0 && errno == ECONNRESET);
}

class VsockLimitsTest : public VsockDeviceTest {
protected:
    // Queues a packet on tx without notifying the device.
    void queue_tx(PacketHeader const& header) {
        auto const head = encode_header(header);
        tx.add_chain({ rx.buffer(std::vector<std::byte>(head.begin(), head.end())) });
    }

    // Runs the loop (waiting up to 10 ms a round) until `done` or `limit` passes; true if done.
    template <typename Predicate>
    bool run_until(Predicate done, std::chrono::milliseconds limit) {
        auto const end = std::chrono::steady_clock::now() + limit;
        while (!done()) {
            if (std::chrono::steady_clock::now() > end)
                return false;
            (void)loop.run_once(10ms);
        }
        return true;
    }

    static size_t count(std::vector<Packet> const& packets, Operation operation) {
        return static_cast<size_t>(std::count_if(packets.begin(), packets.end(), [&](Packet const& packet) {
            return packet.header.operation == static_cast<uint16_t>(operation);
        }));
    }
};

TEST_F(VsockLimitsTest, GuestConnectionsBeyondCap_GetResetAndHoldNoFds) {
    activate();
    // A host program that never accepts: every connection stays in its backlog.
    auto listener = *listen_unix(fmt::format("{}_{}", uds_path, 52));
    size_t const fds_before = open_fds();
    constexpr uint32_t ATTEMPTS = VsockLimits::GUEST_CONNECTIONS + 44;
    size_t responses = 0;
    size_t resets = 0;
    for (uint32_t batch = 0; batch < ATTEMPTS; batch += 100) {
        post_rx_buffers(100);
        for (uint32_t port = batch; port < std::min(batch + 100, ATTEMPTS); ++port)
            queue_tx(guest_header(Operation::Request, 2000 + port, 52));
        driver->notify(VsockDevice::TX_QUEUE);
        auto const packets = received();
        responses += count(packets, Operation::Response);
        resets += count(packets, Operation::Reset);
        while (tx.pop_used()) {
        }
    }
    EXPECT_EQ(responses, VsockLimits::GUEST_CONNECTIONS);
    EXPECT_EQ(resets, ATTEMPTS - VsockLimits::GUEST_CONNECTIONS);
    EXPECT_EQ(vsock->guest_connections_over_limit(), ATTEMPTS - VsockLimits::GUEST_CONNECTIONS);
    EXPECT_EQ(vsock->active_connections(), VsockLimits::GUEST_CONNECTIONS);
    EXPECT_LE(open_fds() - fds_before, VsockLimits::GUEST_CONNECTIONS);

    // The host side has its own share: a host program still reaches the guest.
    post_rx_buffers(1);
    auto [client, request] = host_connect(7);
    EXPECT_EQ(request.operation, static_cast<uint16_t>(Operation::Request));
}

TEST_F(VsockLimitsTest, HostClientsBeyondCap_AreClosed) {
    create_device({ .host_connections = 2 });
    activate();
    post_rx_buffers(8);
    auto [first, first_request] = host_connect(5);
    auto [second, second_request] = host_connect(6);
    auto third = connect_blocking(uds_path);
    send_all(third.get(), "CONNECT 7\n");
    run();
    EXPECT_TRUE(peer_closed(third.get()));
    EXPECT_EQ(vsock->host_connections_over_limit(), 1u);
    EXPECT_EQ(vsock->active_connections(), 2u);
    // The guest's own share is untouched.
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    EXPECT_TRUE(server.is_valid());
}

TEST_F(VsockLimitsTest, ClientWithoutConnectLine_IsDroppedAfterHandshakeTimeout) {
    create_device({ .handshake_timeout = 300ms });
    activate();
    post_rx_buffers(4);
    auto const start = std::chrono::steady_clock::now();
    auto silent = connect_blocking(uds_path);
    run();
    EXPECT_EQ(vsock->pending_handshakes(), 1u);
    EXPECT_FALSE(at_end_of_stream(silent.get())) << "dropped before its timeout";
    // A client that talks is served meanwhile and is not affected by the timeout.
    auto [talker, request] = host_connect(9);
    ASSERT_EQ(request.operation, static_cast<uint16_t>(Operation::Request));
    send(guest_header(Operation::Response, 9, request.source_port));
    ASSERT_EQ(receive(talker.get()), fmt::format("OK {}\n", request.source_port));

    EXPECT_TRUE(run_until([&] { return vsock->handshakes_timed_out() == 1; }, 3s));
    EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
    EXPECT_TRUE(at_end_of_stream(silent.get()));
    EXPECT_EQ(vsock->pending_handshakes(), 0u);
    EXPECT_EQ(vsock->active_connections(), 1u);
    run();
    EXPECT_FALSE(at_end_of_stream(talker.get()));
}

TEST_F(VsockLimitsTest, ClientTricklingItsLine_IsDroppedAtTheDeadlineFromConnect) {
    create_device({ .handshake_timeout = 300ms });
    activate();
    post_rx_buffers(4);
    auto client = connect_blocking(uds_path);
    // One byte every 50 ms: each arrives well within the timeout, the whole line never does.
    std::string_view const connect_line = "CONNECT 1234567890123456789";
    bool dropped = false;
    for (size_t i = 0; i < connect_line.size() && !dropped; ++i) {
        if (::send(client.get(), &connect_line[i], 1, MSG_NOSIGNAL) != 1)
            break;
        dropped = run_until([&] { return vsock->handshakes_timed_out() == 1; }, 50ms);
    }
    EXPECT_TRUE(run_until([&] { return vsock->handshakes_timed_out() == 1; }, 2s));
    EXPECT_TRUE(peer_closed(client.get()));
    EXPECT_EQ(vsock->pending_handshakes(), 0u);
}

TEST_F(VsockLimitsTest, SilentClientsBeyondHandshakeCap_OldestIsDropped) {
    create_device({ .handshakes = 4 });
    activate();
    post_rx_buffers(4);
    std::vector<UniqueFd> silent;
    for (int i = 0; i < 5; ++i) {
        silent.push_back(connect_blocking(uds_path));
        run();
    }
    EXPECT_EQ(vsock->pending_handshakes(), 4u);
    EXPECT_EQ(vsock->handshakes_evicted(), 1u);
    EXPECT_TRUE(at_end_of_stream(silent[0].get()));
    EXPECT_FALSE(at_end_of_stream(silent[4].get()));
    // A client that sends its line at once still gets through the silent crowd.
    auto [talker, request] = host_connect(9);
    EXPECT_EQ(request.operation, static_cast<uint16_t>(Operation::Request));
}

TEST_F(VsockLimitsTest, SilentClientAtBothCaps_IsReplacedByANewcomerButNotDroppedForARefusedOne) {
    create_device({ .host_connections = 3, .handshakes = 1 });
    activate();
    post_rx_buffers(4);
    auto [first, first_request] = host_connect(5);
    auto [second, second_request] = host_connect(6);
    auto silent = connect_blocking(uds_path);
    run();
    ASSERT_EQ(vsock->pending_handshakes(), 1u);

    // Both caps are reached: the newcomer takes the place of the silent client, whose slot is
    // what lets it in under the host cap.
    auto newcomer = connect_blocking(uds_path);
    run();
    EXPECT_TRUE(at_end_of_stream(silent.get()));
    EXPECT_FALSE(at_end_of_stream(newcomer.get()));
    EXPECT_EQ(vsock->handshakes_evicted(), 1u);
    EXPECT_EQ(vsock->host_connections_over_limit(), 0u);

    // Once the newcomer talks, every host slot holds a connection: a client refused for the cap
    // costs nobody their place.
    send_all(newcomer.get(), "CONNECT 7\n");
    run();
    ASSERT_EQ(vsock->active_connections(), 3u);
    auto refused = connect_blocking(uds_path);
    run();
    EXPECT_TRUE(peer_closed(refused.get()));
    EXPECT_EQ(vsock->host_connections_over_limit(), 1u);
    EXPECT_EQ(vsock->handshakes_evicted(), 1u);
    EXPECT_EQ(vsock->active_connections(), 3u);
    EXPECT_FALSE(at_end_of_stream(first.get()));
    EXPECT_FALSE(at_end_of_stream(newcomer.get()));
}

TEST_F(VsockLimitsTest, RequestTheGuestNeverAnswers_IsDroppedAfterTimeout) {
    create_device({ .handshake_timeout = 100ms });
    activate();
    post_rx_buffers(4);
    auto [client, request] = host_connect(33);
    ASSERT_EQ(request.operation, static_cast<uint16_t>(Operation::Request));
    EXPECT_TRUE(run_until([&] { return vsock->host_requests_timed_out() == 1; }, 3s));
    EXPECT_TRUE(at_end_of_stream(client.get()));
    EXPECT_EQ(vsock->active_connections(), 0u);
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::Reset));
    EXPECT_EQ(packets[0].header.source_port, request.source_port);
    EXPECT_EQ(packets[0].header.destination_port, 33u);
}

TEST_F(VsockLimitsTest, AcceptOutOfFds_BacksOffInsteadOfSpinning) {
    if (kvmm::testing::SANITIZED_BUILD)
        GTEST_SKIP() << "a full descriptor table breaks the sanitizers' own checks; the release build runs this";
    create_device({ .accept_backoff = 200ms });
    activate();
    post_rx_buffers(4);
    auto client = connect_blocking(uds_path);
    send_all(client.get(), "CONNECT 3\n");
    // The lowest free fd becomes the limit: accept() fails with EMFILE.
    rlimit original {};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &original), 0);
    int const lowest_free = ::dup(0);
    ASSERT_GE(lowest_free, 0);
    ::close(lowest_free);
    rlimit lowered = original;
    lowered.rlim_cur = static_cast<rlim_t>(lowest_free);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
    int rounds = 0;
    for (; rounds < 20; ++rounds)
        (void)loop.run_once(0ms);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &original), 0);
    // One failure, then the listener rested: not one accept per round.
    EXPECT_EQ(vsock->accept_errors(), 1u);
    EXPECT_EQ(vsock->pending_handshakes() + vsock->active_connections(), 0u);
    // After the back-off the waiting client is served.
    EXPECT_TRUE(run_until([&] { return vsock->active_connections() == 1; }, 2s));
    auto const packets = received();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.operation, static_cast<uint16_t>(Operation::Request));
}

TEST_F(VsockLimitsTest, TxFlood_IsProcessedInSlicesWithOtherFdsServedBetween) {
    create_device({ .work_budget = WorkBudget(8, WorkBudget::DEFAULT_BYTES) });
    activate();
    // Packets from a foreign CID: dropped, so each costs one chain and nothing else.
    constexpr uint16_t FLOOD = 64;
    for (uint16_t i = 0; i < FLOOD; ++i) {
        auto header = guest_header(Operation::Request, 1000 + i, 52);
        header.source_cid = 99;
        queue_tx(header);
    }
    // Another fd that stays ready (a signal arriving while the guest floods).
    auto signal = *EventFd::create();
    ASSERT_TRUE(signal.signal());
    std::vector<uint16_t> used_when_served;
    ASSERT_TRUE(loop.add(signal.fd(), [&] { used_when_served.push_back(tx.used_index()); }));
    driver->notify(VsockDevice::TX_QUEUE);
    std::vector<uint16_t> used_after_round;
    for (int round = 0; round < FLOOD / 8 + 2; ++round) {
        ASSERT_TRUE(loop.run_once(0ms));
        used_after_round.push_back(tx.used_index());
    }
    loop.remove(signal.fd());
    uint16_t previous = 0;
    for (uint16_t used : used_after_round) {
        EXPECT_LE(used - previous, 8) << "one round handled more than the budget";
        previous = used;
    }
    EXPECT_EQ(previous, FLOOD);
    EXPECT_EQ(vsock->packets_dropped(), FLOOD);
    // The other fd was served in every round, also while the flood was still being worked off.
    EXPECT_EQ(used_when_served.size(), used_after_round.size());
    EXPECT_LT(used_when_served.front(), FLOOD / 2);
    EXPECT_GE(vsock->budget_yields(), FLOOD / 8 - 1);
}

TEST_F(VsockLimitsTest, RxDelivery_IsSlicedAndConnectionsTakeTurns) {
    create_device({ .work_budget = WorkBudget(4, WorkBudget::DEFAULT_BYTES) });
    activate();
    post_rx_buffers(64);
    UniqueFd first_listener, second_listener;
    auto first = guest_connect(1025, 52, first_listener);
    auto second = guest_connect(1026, 53, second_listener);
    send_all(first.get(), std::string(40 * 1024, 'a'));
    send_all(second.get(), std::string(40 * 1024, 'b'));
    std::vector<Packet> packets;
    uint16_t previous = rx.used_index();
    for (int round = 0; round < 40; ++round) {
        ASSERT_TRUE(loop.run_once(0ms));
        EXPECT_LE(static_cast<uint16_t>(rx.used_index() - previous), 4) << "one round filled more than the budget";
        previous = rx.used_index();
    }
    packets = received();
    ASSERT_GE(packets.size(), 4u);
    // Neither connection waits for the other to run dry: the first four packets carry both.
    std::set<uint32_t> first_four;
    for (size_t i = 0; i < 4; ++i)
        first_four.insert(packets[i].header.destination_port);
    EXPECT_EQ(first_four, (std::set<uint32_t> { 1025, 1026 }));
    EXPECT_EQ(vsock->bytes_to_guest(), 2u * 40 * 1024);
}

TEST_F(VsockLimitsTest, HostDataFasterThanGuestTakes_StaysInTheHostSocket) {
    guest_buffer_allocation = 64 * 1024;
    activate();
    post_rx_buffers(4);
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    post_rx_buffers(100); // more buffers than the guest's credit covers
    // The host program writes until its socket pushes back, the device running in between.
    std::string const chunk(16 * 1024, 'z');
    size_t written = 0;
    bool pushed_back = false;
    for (int i = 0; i < 4096 && !pushed_back; ++i) {
        ssize_t const sent = ::send(server.get(), chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        pushed_back = sent < 0 && errno == EAGAIN;
        written += sent > 0 ? static_cast<size_t>(sent) : 0;
        run();
    }
    // The device took what the guest's credit allows and no more: the rest is the host
    // socket's backpressure, not memory in kvmm.
    EXPECT_TRUE(pushed_back) << "the host socket took " << written << " bytes without pushing back";
    EXPECT_EQ(vsock->bytes_to_guest(), 64u * 1024);
    EXPECT_GT(written, 64u * 1024);
    errno = 0;
    EXPECT_LT(::send(server.get(), chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL), 0);
    EXPECT_EQ(errno, EAGAIN);
}

TEST_F(VsockLimitsTest, OpenAndResetChurnWithoutRxBuffers_KeepsRxListBounded) {
    activate();
    auto listener = *listen_unix(fmt::format("{}_{}", uds_path, 52));
    for (uint32_t i = 0; i < 300; ++i) {
        queue_tx(guest_header(Operation::Request, 5000, 52)); // its RESPONSE waits for an rx buffer
        queue_tx(guest_header(Operation::Reset, 5000, 52));
        driver->notify(VsockDevice::TX_QUEUE);
        run();
        while (tx.pop_used()) {
        }
        // Keep the never-accepting listener's backlog short.
        UniqueFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    }
    EXPECT_EQ(vsock->connections_opened(), 300u);
    EXPECT_EQ(vsock->active_connections(), 0u);
    EXPECT_EQ(vsock->pending_rx_connections(), 0u);
}

} // namespace
} // namespace kvmm::virtio::vsock

// Tests of NetDevice against the real kernel: each test runs in a forked child
// inside a fresh network namespace (unshare(CLONE_NEWNET)) with a TAP that has
// 10.0.0.1/24, and plays the guest driver through DriverQueue/MmioDriver. The
// host's network is never touched; without CAP_SYS_ADMIN or /dev/net/tun the
// tests are skipped.
#include "devices/virtio/net/net_device.h"

#include "base/testing/state_round_trip.h"

#include "backends/net/testing/network_namespace.h"
#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "devices/virtio/testing/state_expectations.h"

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

#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <string>

namespace kvmm::virtio {
namespace {

using testing::DriverBuffer;
using testing::DriverQueue;
using testing::MmioDriver;
using Bytes = std::vector<uint8_t>;
using kvmm::testing::configure_interface;
using kvmm::testing::run_in_network_namespace;

constexpr size_t HEADER = Tap::VIRTIO_NET_HEADER_SIZE;
constexpr size_t ETHERNET_HEADER = 14;
constexpr uint16_t ETHERTYPE_IPV4 = 0x0800;
constexpr uint16_t ETHERTYPE_ARP = 0x0806;
constexpr uint16_t UDP_PORT = 5555;
constexpr MacAddress GUEST_MAC { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
constexpr char const* INTERFACE = "kvmmnet0";

uint16_t be16(Bytes const& bytes, size_t offset) {
    return static_cast<uint16_t>(bytes[offset] << 8 | bytes[offset + 1]);
}
uint16_t le16(Bytes const& bytes, size_t offset) {
    return static_cast<uint16_t>(bytes[offset] | bytes[offset + 1] << 8);
}

// An ARP request (RFC 826) from the guest, 10.0.0.2, for 10.0.0.1.
Bytes arp_request() {
    Bytes frame(ETHERNET_HEADER + 28, 0);
    std::fill_n(frame.begin(), 6, 0xff);
    std::copy(GUEST_MAC.begin(), GUEST_MAC.end(), frame.begin() + 6);
    frame[12] = 0x08, frame[13] = 0x06;
    uint8_t const arp[] = { 0, 1, 8, 0, 6, 4, 0, 1 };
    std::copy(std::begin(arp), std::end(arp), frame.begin() + 14);
    std::copy(GUEST_MAC.begin(), GUEST_MAC.end(), frame.begin() + 22);
    uint8_t const sender[] = { 10, 0, 0, 2 }, target[] = { 10, 0, 0, 1 };
    std::copy(std::begin(sender), std::end(sender), frame.begin() + 28);
    std::copy(std::begin(target), std::end(target), frame.begin() + 38);
    return frame;
}

bool is_arp_reply(Bytes const& frame) {
    return frame.size() >= HEADER + ETHERNET_HEADER + 28 && be16(frame, HEADER + 12) == ETHERTYPE_ARP &&
           be16(frame, HEADER + 14 + 6) == 2 && std::equal(GUEST_MAC.begin(), GUEST_MAC.end(), frame.begin() + HEADER);
}

// Offset of the UDP payload for a datagram to UDP_PORT, or 0 when `frame` is something else.
size_t udp_payload_offset(Bytes const& frame) {
    size_t const ip = HEADER + ETHERNET_HEADER;
    if (frame.size() < ip + 28 || be16(frame, HEADER + 12) != ETHERTYPE_IPV4 || frame[ip + 9] != IPPROTO_UDP)
        return 0;
    size_t const udp = ip + (frame[ip] & 0xf) * 4u;
    return frame.size() >= udp + 8 && be16(frame, udp + 2) == UDP_PORT ? udp + 8 : 0;
}

void send_broadcast(Bytes const& payload) {
    int const fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    int const on = 1;
    ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof(on)), 0) << std::strerror(errno);
    sockaddr_in to {};
    to.sin_family = AF_INET;
    to.sin_port = htons(UDP_PORT);
    ASSERT_EQ(::inet_pton(AF_INET, "10.0.0.255", &to.sin_addr), 1);
    ASSERT_EQ(::sendto(fd, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)),
              static_cast<ssize_t>(payload.size()))
        << std::strerror(errno);
    ::close(fd);
}

struct ReceivedFrame {
    Bytes bytes; // virtio-net header first
    uint16_t num_buffers;
    std::vector<uint32_t> used_lengths;
};

// The guest driver and its device, built inside the test's namespace.
class NetHarness {
public:
    explicit NetHarness(uint64_t features, int mtu = 1500, NetDeviceOptions options = {}) {
        // Less background traffic: no IPv6 neighbour discovery on the new interface (best effort).
        if (int fd = ::open("/proc/sys/net/ipv6/conf/default/disable_ipv6", O_WRONLY | O_CLOEXEC); fd >= 0) {
            (void)!::write(fd, "1", 1);
            ::close(fd);
        }
        auto tap = Tap::open(INTERFACE);
        if (!tap) {
            ADD_FAILURE() << tap.error().message();
            return;
        }
        configure_interface(INTERFACE, "10.0.0.1", mtu);
        options.mac = GUEST_MAC;
        auto created = NetDevice::create(std::move(*tap), std::move(options), loop);
        if (!created) {
            ADD_FAILURE() << created.error().message();
            return;
        }
        device = created->get();
        transport = MUST(MmioTransport::create("net", std::move(*created), memory, line, loop));
        driver.emplace(*transport, loop);
        status = driver->initialize(features, { &rx, &tx });
    }
    bool ready() const { return driver && (status & STATUS_DRIVER_OK); }

    void post_rx_buffers(size_t count, uint32_t size) {
        for (size_t i = 0; i < count; ++i) {
            auto const buffer = rx.writable_buffer(size);
            m_rx_buffers[rx.add_chain({ buffer })] = buffer;
        }
        driver->notify(NetDevice::RX_QUEUE);
    }

    // The header and the frame in two descriptors, as Linux sends them.
    void transmit(Bytes const& frame, Bytes header = Bytes(HEADER, 0)) {
        tx.add_chain({ tx.buffer(std::as_bytes(std::span(header))), tx.buffer(std::as_bytes(std::span(frame))) });
        driver->notify(NetDevice::TX_QUEUE);
        driver->run_event_loop();
    }

    // The next received frame, assembled from num_buffers used chains.
    std::optional<ReceivedFrame> next_frame(int timeout_ms = 2000) {
        auto const deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        auto next_used = [&]() -> std::optional<UsedElement> {
            while (true) {
                driver->run_event_loop();
                if (auto used = rx.pop_used())
                    return used;
                if (std::chrono::steady_clock::now() > deadline)
                    return std::nullopt;
                driver->run_event_loop(10);
            }
        };
        auto first = next_used();
        if (!first)
            return std::nullopt;
        ReceivedFrame frame;
        auto append = [&](UsedElement const& used) {
            auto const bytes = rx.read(m_rx_buffers.at(static_cast<uint16_t>(used.id)).address, used.length);
            for (auto const b : bytes)
                frame.bytes.push_back(static_cast<uint8_t>(b));
            frame.used_lengths.push_back(used.length);
        };
        append(*first);
        if (frame.bytes.size() < HEADER)
            return frame;
        frame.num_buffers = le16(frame.bytes, NET_HEADER_NUM_BUFFERS_OFFSET);
        for (uint16_t i = 1; i < frame.num_buffers; ++i) {
            auto more = next_used();
            if (!more)
                return std::nullopt;
            append(*more);
        }
        return frame;
    }

    std::optional<ReceivedFrame> next_frame_where(std::function<bool(Bytes const&)> const& wanted) {
        while (auto frame = next_frame())
            if (wanted(frame->bytes))
                return frame;
        return std::nullopt;
    }

    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 16 << 20 } });
    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    DriverQueue rx { memory, GuestAddress(0x10000), NetDevice::QUEUE_SIZE };
    DriverQueue tx { memory, GuestAddress(0x800000), NetDevice::QUEUE_SIZE };
    NetDevice* device { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
    uint32_t status { 0 };

private:
    std::map<uint16_t, DriverBuffer> m_rx_buffers;
};

constexpr uint64_t BASIC_FEATURES = feature_bit(net_feature::MAC) | feature_bit(FEATURE_RING_EVENT_IDX);

TEST(NetDevice, ConfigSpace_ReportsMacLinkUpAndOneQueuePair) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES);
        ASSERT_TRUE(harness.ready());
        uint8_t config[NET_CONFIG_SIZE + 2];
        harness.device->read_config(0, config);
        EXPECT_TRUE(std::equal(GUEST_MAC.begin(), GUEST_MAC.end(), config));
        EXPECT_EQ(config[6] | config[7] << 8, NET_STATUS_LINK_UP);
        EXPECT_EQ(config[8] | config[9] << 8, 1);
        EXPECT_EQ(config[10] | config[11], 0) << "past the end reads as zeros";
        uint64_t const offered = harness.driver->device_features();
        for (unsigned bit : { net_feature::MRG_RXBUF, net_feature::STATUS, net_feature::CSUM, net_feature::HOST_TSO4,
                              FEATURE_RING_INDIRECT_DESC })
            EXPECT_TRUE(has_feature(offered, bit)) << "feature bit " << bit;
    });
}

TEST(NetDevice, ArpRequestFromGuest_KernelReplyArrivesInReceiveBuffer) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES);
        ASSERT_TRUE(harness.ready());
        harness.post_rx_buffers(32, 2048);
        harness.transmit(arp_request());
        EXPECT_EQ(harness.device->tx_packets(), 1u);
        EXPECT_EQ(harness.device->tx_bytes(), arp_request().size());
        auto const used = harness.tx.pop_used();
        ASSERT_TRUE(used);
        EXPECT_EQ(used->length, 0u);
        auto const reply = harness.next_frame_where(is_arp_reply);
        ASSERT_TRUE(reply) << "no ARP reply reached the guest";
        EXPECT_EQ(reply->num_buffers, 1u);
        // Sender of the reply: 10.0.0.1.
        EXPECT_EQ(reply->bytes[HEADER + 28], 10);
        EXPECT_EQ(reply->bytes[HEADER + 31], 1);
        EXPECT_GE(harness.device->rx_packets(), 1u);
        EXPECT_EQ(harness.device->rx_drops(), 0u);
        EXPECT_NE(harness.line.levels.size(), 0u) << "no interrupt for the used buffers";
    });
}

TEST(NetDevice, HostDatagram_ReachesGuestWithHeader) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES);
        ASSERT_TRUE(harness.ready());
        harness.post_rx_buffers(32, 2048);
        Bytes const payload { 'h', 'e', 'l', 'l', 'o' };
        send_broadcast(payload);
        auto const frame = harness.next_frame_where([](Bytes const& f) { return udp_payload_offset(f) != 0; });
        ASSERT_TRUE(frame) << "the datagram did not reach the guest";
        size_t const offset = udp_payload_offset(frame->bytes);
        ASSERT_EQ(frame->bytes.size(), offset + payload.size());
        EXPECT_TRUE(std::equal(payload.begin(), payload.end(), frame->bytes.begin() + static_cast<long>(offset)));
        EXPECT_EQ(frame->num_buffers, 1u) << "num_buffers is 1 without MRG_RXBUF";
        EXPECT_TRUE(std::all_of(frame->bytes.begin() + HEADER, frame->bytes.begin() + HEADER + 6,
                                [](uint8_t b) { return b == 0xff; }));
    });
}

TEST(NetDevice, MergeableBuffers_LargeFrameSpansSeveralChains) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES | feature_bit(net_feature::MRG_RXBUF), 9000);
        ASSERT_TRUE(harness.ready());
        harness.post_rx_buffers(64, 1024);
        Bytes payload(4000);
        for (size_t i = 0; i < payload.size(); ++i)
            payload[i] = static_cast<uint8_t>(i * 7);
        send_broadcast(payload);
        auto const frame = harness.next_frame_where([](Bytes const& f) { return udp_payload_offset(f) != 0; });
        ASSERT_TRUE(frame) << "the datagram did not reach the guest";
        size_t const total = HEADER + ETHERNET_HEADER + 20 + 8 + payload.size();
        ASSERT_EQ(frame->bytes.size(), total);
        EXPECT_EQ(frame->num_buffers, (total + 1023) / 1024);
        ASSERT_EQ(frame->used_lengths.size(), frame->num_buffers);
        EXPECT_EQ(frame->used_lengths.front(), 1024u);
        EXPECT_EQ(frame->used_lengths.back(), total % 1024);
        size_t const offset = udp_payload_offset(frame->bytes);
        EXPECT_TRUE(std::equal(payload.begin(), payload.end(), frame->bytes.begin() + static_cast<long>(offset)));
    });
}

TEST(NetDevice, FrameLargerThanBufferWithoutMergeable_IsDroppedAndCounted) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES, 9000);
        ASSERT_TRUE(harness.ready());
        harness.post_rx_buffers(1, 1024);
        send_broadcast(Bytes(4000, 1));
        auto const deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while (harness.device->rx_drops() == 0 && std::chrono::steady_clock::now() < deadline)
            harness.driver->run_event_loop(10);
        EXPECT_EQ(harness.device->rx_drops(), 1u);
        // The buffer is kept for a frame that fits.
        send_broadcast(Bytes { 1, 2, 3 });
        auto const frame = harness.next_frame_where([](Bytes const& f) { return udp_payload_offset(f) != 0; });
        ASSERT_TRUE(frame);
        EXPECT_EQ(frame->bytes.size(), udp_payload_offset(frame->bytes) + 3);
    });
}

TEST(NetDevice, NoReceiveBuffers_FramesWaitInTapQueueWithoutLoss) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES);
        ASSERT_TRUE(harness.ready());
        constexpr uint8_t FRAMES = 50;
        for (uint8_t i = 0; i < FRAMES; ++i)
            send_broadcast(Bytes { i });
        harness.driver->run_event_loop(100);
        EXPECT_EQ(harness.device->rx_packets(), 0u);
        EXPECT_EQ(harness.device->rx_drops(), 0u);
        EXPECT_EQ(harness.rx.used_index(), 0u);
        harness.post_rx_buffers(128, 2048);
        std::vector<uint8_t> sequence;
        while (sequence.size() < FRAMES) {
            auto const frame = harness.next_frame_where([](Bytes const& f) { return udp_payload_offset(f) != 0; });
            if (!frame)
                break;
            sequence.push_back(frame->bytes[udp_payload_offset(frame->bytes)]);
        }
        ASSERT_EQ(sequence.size(), FRAMES);
        for (uint8_t i = 0; i < FRAMES; ++i)
            EXPECT_EQ(sequence[i], i);
        EXPECT_EQ(harness.device->rx_drops(), 0u);
    });
}

TEST(NetDevice, MalformedTransmitChains_AreDroppedAndDeviceKeepsWorking) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES);
        ASSERT_TRUE(harness.ready());
        harness.post_rx_buffers(32, 2048);
        // Shorter than the virtio-net header.
        Bytes const tiny(4, 0);
        harness.tx.add_chain({ harness.tx.buffer(std::as_bytes(std::span(tiny))) });
        // Longer than any frame.
        Bytes const huge(NetDevice::MAX_FRAME_SIZE + 1);
        harness.tx.add_chain({ harness.tx.buffer(std::as_bytes(std::span(huge))) });
        harness.driver->notify(NetDevice::TX_QUEUE);
        harness.driver->run_event_loop();
        EXPECT_EQ(harness.device->tx_drops(), 2u);
        EXPECT_EQ(harness.device->tx_packets(), 0u);
        ASSERT_TRUE(harness.tx.pop_used());
        ASSERT_TRUE(harness.tx.pop_used());
        // A GSO type the kernel does not know: refused by the TAP, dropped.
        Bytes bad_header(HEADER, 0);
        bad_header[1] = 0x55;
        harness.transmit(arp_request(), bad_header);
        EXPECT_EQ(harness.device->tx_drops(), 3u);
        ASSERT_TRUE(harness.tx.pop_used());
        EXPECT_EQ(harness.driver->read32(0x70) & STATUS_DEVICE_NEEDS_RESET, 0u);
        harness.transmit(arp_request());
        EXPECT_EQ(harness.device->tx_packets(), 1u);
        EXPECT_TRUE(harness.next_frame_where(is_arp_reply)) << "the device stopped working";
    });
}

TEST(NetDevice, TransmitRateLimiter_DefersFramesUntilItsTimer) {
    run_in_network_namespace([] {
        RateLimitConfig config;
        config.ops = TokenBucketConfig { .size = 1, .one_time_burst = 0, .refill_time_ms = 100 };
        NetDeviceOptions options;
        options.tx_rate_limiter = MUST(RateLimiter::create(config));
        NetHarness harness(BASIC_FEATURES, 1500, std::move(options));
        ASSERT_TRUE(harness.ready());
        harness.transmit(arp_request());
        harness.transmit(arp_request());
        EXPECT_EQ(harness.device->tx_packets(), 1u);
        EXPECT_EQ(harness.device->tx_rate_limited(), 1u);
        harness.driver->run_event_loop(300); // the limiter's timer fires within 100 ms
        EXPECT_EQ(harness.device->tx_packets(), 2u);
        EXPECT_EQ(harness.tx.used_index(), 2u);
    });
}

TEST(NetDevice, TransmitRateLimiterUpdate_LiftsTheLimitOfARunningDevice) {
    run_in_network_namespace([] {
        RateLimitConfig config;
        config.ops = TokenBucketConfig { .size = 1, .one_time_burst = 0, .refill_time_ms = 60000 };
        NetDeviceOptions options;
        options.tx_rate_limiter = MUST(RateLimiter::create(config));
        options.rx_rate_limiter = MUST(RateLimiter::create(RateLimitConfig {}));
        NetHarness harness(BASIC_FEATURES, 1500, std::move(options));
        ASSERT_TRUE(harness.ready());
        harness.transmit(arp_request());
        harness.transmit(arp_request());
        EXPECT_EQ(harness.device->tx_packets(), 1u); // the second frame waits a minute
        RateLimitConfig no_limit;
        no_limit.ops = TokenBucketConfig {};
        MUST(harness.device->tx_rate_limiter()->update(no_limit));
        harness.driver->run_event_loop(300);
        EXPECT_EQ(harness.device->tx_packets(), 2u);
        EXPECT_EQ(harness.tx.used_index(), 2u);
    });
}

TEST(NetDevice, Reset_StopsReadingTheTap) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES);
        ASSERT_TRUE(harness.ready());
        harness.post_rx_buffers(8, 2048);
        harness.driver->write32(0x70, 0);
        harness.driver->run_event_loop();
        send_broadcast(Bytes { 9 });
        harness.driver->run_event_loop(100);
        EXPECT_EQ(harness.device->rx_packets(), 0u);
        EXPECT_EQ(harness.rx.used_index(), 0u);
    });
}

// ---- Saved state ----

// The saved-state half of a harness: its own receive buffers (the harness's bookkeeping goes
// with its transport), and a device restored on a TAP of the same name, served as a transport
// would serve it (the turns it asks for).
struct RestoreBench {
    explicit RestoreBench(NetHarness& under_test) : harness(under_test) {}

    void post_rx(size_t count) {
        for (size_t i = 0; i < count; ++i) {
            auto const buffer = harness.rx.writable_buffer(2048);
            rx_buffers[harness.rx.add_chain({ buffer })] = buffer;
        }
    }
    std::optional<Bytes> frame(UsedElement const& used) {
        auto const bytes = harness.rx.read(rx_buffers.at(static_cast<uint16_t>(used.id)).address, used.length);
        Bytes frame(bytes.size());
        std::memcpy(frame.data(), bytes.data(), bytes.size());
        return frame;
    }
    // Runs `step` (the event loop of the old or the restored device) until a received frame
    // satisfies `wanted`, for at most two seconds.
    std::optional<Bytes> wait_frame(std::function<void()> const& step,
                                    std::function<bool(Bytes const&)> const& wanted) {
        auto const deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while (std::chrono::steady_clock::now() < deadline) {
            step();
            while (auto const used = harness.rx.pop_used())
                if (auto bytes = frame(*used); bytes && wanted(*bytes))
                    return bytes;
        }
        return std::nullopt;
    }

    ActivationContext context(uint64_t features) {
        ActivationContext result;
        result.features = features;
        result.queues.emplace_back(MUST(Queue::create(harness.memory, harness.rx.config(), features)));
        result.queues.emplace_back(MUST(Queue::create(harness.memory, harness.tx.config(), features)));
        result.memory = &harness.memory;
        result.interrupt = &interrupt;
        result.fail = [this](Error const& error) { failures.push_back(error.message()); };
        result.reschedule = [this](size_t index) { rescheduled.push_back(index); };
        return result;
    }
    // The old device and its TAP go (as with the old process); a device on a new TAP of the
    // same name takes their place, not yet restored.
    std::unique_ptr<NetDevice> replacement(MacAddress mac = GUEST_MAC) {
        harness.driver.reset();
        harness.transport.reset();
        harness.device = nullptr;
        auto tap = Tap::open(INTERFACE);
        EXPECT_TRUE(tap) << (tap ? "" : tap.error().message());
        if (!tap)
            return nullptr;
        configure_interface(INTERFACE, "10.0.0.1");
        NetDeviceOptions options;
        options.mac = mac;
        return MUST(NetDevice::create(std::move(*tap), std::move(options), harness.loop));
    }
    void serve(NetDevice& device) {
        (void)harness.loop.run_once(std::chrono::milliseconds(10));
        for (size_t const index : std::exchange(rescheduled, {}))
            device.process_queue(index);
    }

    NetHarness& harness;
    std::map<uint16_t, DriverBuffer> rx_buffers;
    RecordingInterruptLine line;
    VirtioInterrupt interrupt { line };
    std::vector<std::string> failures;
    std::vector<size_t> rescheduled;
};

TEST(NetDeviceState, SaveRestoreSave_GivesTheSameState_AndTheRestoredDeviceCarriesFrames) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES);
        ASSERT_TRUE(harness.ready());
        RestoreBench bench(harness);
        bench.post_rx(8);
        harness.driver->notify(NetDevice::RX_QUEUE);
        harness.transmit(arp_request());
        ASSERT_TRUE(bench.wait_frame([&] { harness.driver->run_event_loop(10); }, is_arp_reply));

        auto const saved = harness.device->save();
        ASSERT_TRUE(saved.active);
        EXPECT_EQ(saved.mac, GUEST_MAC);
        auto const& rx = *saved.active->queues[NetDevice::RX_QUEUE];
        EXPECT_TRUE(rx.in_flight_heads.empty()) << "held receive chains go back to the ring";
        EXPECT_EQ(rx.next_available, rx.next_used);
        EXPECT_GE(rx.next_used, 1u);
        EXPECT_EQ(saved.active->queues[NetDevice::TX_QUEUE]->next_used, 1u);

        StateWriter writer;
        MUST(harness.device->save_state(writer));
        auto const blob = seal_state(writer.payload());
        auto restored = bench.replacement();
        ASSERT_TRUE(restored);
        StateReader reader(MUST(open_state(blob)));
        MUST(restored->restore_state(reader, bench.context(saved.active->features)));
        EXPECT_TRUE(reader.at_end());
        EXPECT_EQ(restored->save(), saved);
        EXPECT_EQ(bench.rescheduled, (std::vector<size_t> { NetDevice::RX_QUEUE, NetDevice::TX_QUEUE }));

        // A datagram from the host lands in the buffers the old device had been offered.
        Bytes const payload { 's', 't', 'a', 't', 'e' };
        send_broadcast(payload);
        auto const datagram = bench.wait_frame([&] { bench.serve(*restored); },
                                               [](Bytes const& f) { return udp_payload_offset(f) != 0; });
        ASSERT_TRUE(datagram) << "the restored device delivered nothing";
        size_t const offset = udp_payload_offset(*datagram);
        ASSERT_EQ(datagram->size(), offset + payload.size());
        EXPECT_TRUE(std::equal(payload.begin(), payload.end(), datagram->begin() + static_cast<long>(offset)));

        // And the guest's next frame goes out.
        Bytes const header(HEADER, 0);
        Bytes const request = arp_request();
        harness.tx.add_chain({ harness.tx.buffer(std::as_bytes(std::span(header))),
                               harness.tx.buffer(std::as_bytes(std::span(request))) });
        restored->process_queue(NetDevice::TX_QUEUE);
        EXPECT_EQ(restored->tx_packets(), 1u);
        EXPECT_TRUE(harness.tx.pop_used());
        EXPECT_TRUE(bench.wait_frame([&] { bench.serve(*restored); }, is_arp_reply));
        EXPECT_TRUE(bench.failures.empty());
    });
}

TEST(NetDeviceState, BadStates_AreRefusedNamingTheField_AndChangeNothing) {
    run_in_network_namespace([] {
        NetHarness harness(BASIC_FEATURES);
        ASSERT_TRUE(harness.ready());
        auto const saved = harness.device->save();
        RestoreBench bench(harness);
        uint64_t const features = saved.active->features;

        MacAddress other_mac = GUEST_MAC;
        other_mac[5] ^= 1;
        auto other = bench.replacement(other_mac);
        ASSERT_TRUE(other);
        auto const refused_mac = other->restore(saved, bench.context(features));
        ASSERT_FALSE(refused_mac);
        EXPECT_NE(refused_mac.error().message().find("virtio-net/mac: the saved device had 52:54:00:12:34:56"),
                  std::string::npos)
            << refused_mac.error().message();
        other.reset();

        auto device = bench.replacement();
        ASSERT_TRUE(device);
        auto refuse = [&](std::vector<std::byte> const& payload, std::optional<ActivationContext> with,
                          std::string const& expected) {
            testing::expect_restore_refused(
                *device, [](auto& state_of) { return state_of.save(); }, payload, std::move(with), expected);
        };
        NetState held = saved;
        held.active->queues[NetDevice::RX_QUEUE]->in_flight_heads = { 5 };
        held.active->queues[NetDevice::RX_QUEUE]->next_available = 1;
        refuse(kvmm::testing::encode_payload(held), bench.context(features), "virtio-net/queue0.in_flight_heads");
        refuse(kvmm::testing::encode_payload(saved), std::nullopt, "virtio-net/active");
        refuse(kvmm::testing::encode_payload(saved), bench.context(features | feature_bit(net_feature::MRG_RXBUF)),
               "virtio-net/features");
        NetState not_offered = saved;
        not_offered.active->features |= uint64_t { 1 } << 40;
        refuse(kvmm::testing::encode_payload(not_offered), bench.context(not_offered.active->features),
               "virtio-net/features");
        auto wrong_version = kvmm::testing::encode_payload(saved);
        wrong_version[2 + NetState::SECTION.size()] = std::byte { 3 };
        refuse(wrong_version, bench.context(features), "version 3");
        EXPECT_TRUE(bench.rescheduled.empty());

        auto const payload = kvmm::testing::encode_payload(saved);
        StateReader reader(payload);
        MUST(device->restore_state(reader, bench.context(features)));
        EXPECT_EQ(device->save(), saved);
    });
}

// The format alone, without a TAP: runs everywhere.
TEST(NetState, EncodeDecode_RoundTrips_AndRefusesShortMacsAndForeignSections) {
    NetState state;
    state.offered_features = 0x1234;
    state.mac = GUEST_MAC;
    state.active = ActiveDeviceState { BASIC_FEATURES | feature_bit(FEATURE_VERSION_1),
                                       { QueueState { 7, 5, 5, true, { 3, 9 } }, QueueState { 2, 2, 1, false, {} } } };
    auto const payload = kvmm::testing::encode_payload(state);
    StateReader reader(payload);
    EXPECT_EQ(MUST(NetState::decode(reader)), state);
    EXPECT_TRUE(reader.at_end());

    StateWriter short_mac;
    short_mac.begin_section(NetState::SECTION, NetState::VERSION);
    short_mac.u64(0);
    short_mac.bytes(std::span<uint8_t const>(GUEST_MAC).first(5));
    short_mac.end_section();
    StateReader short_reader(short_mac.payload());
    auto const refused = NetState::decode(short_reader);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("virtio-net/mac: 5 bytes"), std::string::npos)
        << refused.error().message();

    StateWriter foreign;
    foreign.begin_section("virtio-blk", 1);
    foreign.end_section();
    StateReader foreign_reader(foreign.payload());
    auto const not_net = NetState::decode(foreign_reader);
    ASSERT_FALSE(not_net);
    EXPECT_NE(not_net.error().message().find("found section 'virtio-blk'"), std::string::npos)
        << not_net.error().message();
}

} // namespace
} // namespace kvmm::virtio

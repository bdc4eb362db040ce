// libFuzzer target: a hostile virtio-net driver. The input lays out the receive
// and transmit rings (well-formed chains, raw descriptors, available indexes),
// picks the negotiated features, sends host datagrams towards the guest and
// notifies; the device must never crash, hang or grow without bound.
//
// The device needs a real TAP: the first run moves the process into its own
// network namespace (unshare(CLONE_NEWNET), needs CAP_SYS_ADMIN) and creates
// one with 10.9.0.1/24 there, so fuzzing never touches the host's network.
// Without that privilege every input is a no-op.
#include "backends/net/tap.h"
#include "devices/virtio/net/net_device.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "fuzz_support.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>

namespace {

using namespace kvmm;
using namespace kvmm::virtio;
using kvmm::fuzz::FuzzInput;

constexpr char const* INTERFACE = "fuzznet0";

// Brings the TAP up with 10.9.0.1/24; false when the namespace cannot be configured.
bool configure(int socket_fd) {
    ifreq request {};
    std::strncpy(request.ifr_name, INTERFACE, IFNAMSIZ - 1);
    sockaddr_in ipv4 {};
    ipv4.sin_family = AF_INET;
    ::inet_pton(AF_INET, "10.9.0.1", &ipv4.sin_addr);
    std::memcpy(&request.ifr_addr, &ipv4, sizeof(ipv4));
    if (::ioctl(socket_fd, SIOCSIFADDR, &request) != 0)
        return false;
    ::inet_pton(AF_INET, "255.255.255.0", &ipv4.sin_addr);
    std::memcpy(&request.ifr_addr, &ipv4, sizeof(ipv4));
    if (::ioctl(socket_fd, SIOCSIFNETMASK, &request) != 0 || ::ioctl(socket_fd, SIOCGIFFLAGS, &request) != 0)
        return false;
    request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
    return ::ioctl(socket_fd, SIOCSIFFLAGS, &request) == 0;
}

struct Environment {
    std::optional<Tap> tap; // keeps the interface alive; each run adopts a dup of its fd
    int datagram_socket { -1 };
};

Environment const& environment() {
    static Environment const made = [] {
        Environment result;
        if (::unshare(CLONE_NEWNET) != 0)
            return result;
        auto tap = Tap::open(INTERFACE);
        if (!tap)
            return result;
        int const socket_fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int const on = 1;
        if (socket_fd < 0 || !configure(socket_fd) ||
            ::setsockopt(socket_fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof(on)) != 0)
            return result;
        result.tap.emplace(std::move(*tap));
        result.datagram_socket = socket_fd;
        return result;
    }();
    return made;
}

void run(FuzzInput& input, Environment const& env) {
    int const fd = ::dup(env.tap->fd());
    if (fd < 0)
        return;
    auto tap = Tap::from_fd(fd);
    if (!tap) {
        ::close(fd);
        return;
    }
    fuzz::FuzzBench bench(1 << 20);
    auto& memory = bench.memory;
    auto& loop = bench.loop;
    auto device = NetDevice::create(std::move(*tap), NetDeviceOptions { .mac = { 0x52, 0x54, 0, 1, 2, 3 } }, loop);
    if (!device)
        return;
    auto transport = bench.attach("net", std::move(*device));
    if (!transport)
        return;
    testing::MmioDriver driver(**transport, loop);
    testing::DriverQueue rx(memory, GuestAddress(0), 16);
    testing::DriverQueue tx(memory, GuestAddress(0x80000), 16);
    testing::DriverQueue* const queues[] = { &rx, &tx };

    uint8_t const choice = input.take_object<uint8_t>();
    uint64_t features = feature_bit(net_feature::MAC);
    if (choice & 1)
        features |= feature_bit(net_feature::MRG_RXBUF);
    if (choice & 2)
        features |= feature_bit(FEATURE_RING_EVENT_IDX);
    if (choice & 4)
        features |= feature_bit(FEATURE_RING_INDIRECT_DESC);
    if (choice & 8)
        features |= feature_bit(net_feature::GUEST_CSUM) | feature_bit(net_feature::GUEST_TSO4);
    driver.initialize(features, { &rx, &tx });

    for (int operation = 0; operation < 64 && !input.empty(); ++operation) {
        uint8_t const op = input.take_object<uint8_t>();
        auto& queue = *queues[op >> 7];
        switch (op & 7) {
        case 0: { // a well-formed chain of up to 4 buffers, direct or indirect
            std::vector<testing::DriverBuffer> buffers;
            size_t const count = 1 + (op >> 3 & 3);
            for (size_t i = 0; i < count; ++i) {
                uint16_t const length = input.take_object<uint16_t>() & 0x3fff;
                if (input.take_object<uint8_t>() & 1)
                    buffers.push_back(queue.writable_buffer(length));
                else
                    buffers.push_back(queue.buffer(input.bytes(length)));
            }
            if (op & 0x40)
                queue.add_indirect_chain(buffers);
            else
                queue.add_chain(buffers);
            break;
        }
        case 1: { // a raw descriptor, anywhere
            uint16_t const index = input.take_object<uint16_t>() % queue.size();
            queue.write_descriptor(index, input.take_object<Descriptor>());
            break;
        }
        case 2:
            queue.offer(input.take_object<uint16_t>() % 32); // heads past the table too
            break;
        case 3:
            queue.set_available_index(input.take_object<uint16_t>());
            break;
        case 4:
            queue.set_used_event(input.take_object<uint16_t>());
            break;
        case 5: { // a datagram from the host towards the guest
            auto const payload = input.bytes(input.take_object<uint16_t>() & 0x1fff);
            sockaddr_in to {};
            to.sin_family = AF_INET;
            to.sin_port = htons(9);
            ::inet_pton(AF_INET, "10.9.0.255", &to.sin_addr);
            (void)::sendto(env.datagram_socket, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to),
                           sizeof(to));
            break;
        }
        case 6:
            driver.notify(op >> 7);
            driver.run_event_loop();
            break;
        default:
            driver.write32(0x70, 0); // reset, then set up again
            driver.run_event_loop();
            driver.initialize(features, { &rx, &tx });
            break;
        }
    }
    driver.notify(0);
    driver.notify(1);
    driver.run_event_loop();
    // Frames left in the TAP queue must not leak into the next input's expectations; the
    // next device reads them, which is fine: they are just more traffic.
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    auto const& env = environment();
    if (!env.tap)
        return 0;
    FuzzInput input(std::span(data, size));
    try {
        run(input, env);
    } catch (std::runtime_error const&) {
        // The test driver ran out of its data area: a harness limit, not a device bug.
    }
    return 0;
}

// libFuzzer target: a hostile virtio-vsock driver. The input chooses the negotiated features
// and lays out the rx and tx queues: raw descriptors, available ring entries and the bytes of
// the buffers they point at (packet headers and payloads). The device is activated through the
// MMIO transport and both queues are notified, twice, so packets that open connections (a
// listener serves port 52) are followed by data, credit and shutdown packets on them. The
// device must answer or drop every packet, or ask for a reset: no crash, no unbounded work.
#include "devices/virtio/testing/mmio_driver.h"
#include "devices/virtio/vsock/vsock_device.h"
#include "devices/virtio/vsock/vsock_host_socket.h"
#include "fuzz_support.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using kvmm::GuestAddress;
using kvmm::fuzz::FuzzInput;
using kvmm::virtio::feature_bit;

constexpr uint64_t MEMORY_SIZE = 2 << 20;
constexpr uint16_t QUEUE_SIZE = 16;
constexpr uint64_t DATA_BASE = 0x100000;
constexpr uint64_t DATA_SIZE = 0x20000;
constexpr uint64_t GUEST_CID = 3;

// One directory for the whole run: the device's socket and a listener for guest port 52.
struct HostSide {
    HostSide() {
        char pattern[] = "/tmp/kvmm-vsock-fuzz-XXXXXX";
        if (::mkdtemp(pattern) == nullptr)
            std::abort();
        uds_path = std::string(pattern) + "/v.sock";
        listener = *kvmm::virtio::vsock::listen_unix(uds_path + "_52");
    }
    // Closes what the device connected, so the listener's backlog never fills up.
    void drain() {
        while (true) {
            int const fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                return;
            ::send(fd, "host data", 9, MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(fd);
        }
    }
    std::string uds_path;
    kvmm::UniqueFd listener;
};

// Fills one queue's descriptors and available ring from the input. Descriptor addresses are
// mostly folded into the data area (so they are valid often enough to reach the parser) but
// can be left raw to test the queue's checks.
void lay_out_queue(FuzzInput& input, kvmm::virtio::testing::DriverQueue& queue) {
    using kvmm::virtio::Descriptor;
    uint16_t const descriptors = static_cast<uint16_t>(input.take(1) % (QUEUE_SIZE + 1));
    for (uint16_t i = 0; i < descriptors; ++i) {
        uint64_t address = input.take(4);
        if ((address & 0x80000000) == 0)
            address = DATA_BASE + address % DATA_SIZE;
        auto const length = static_cast<uint32_t>(input.take(2));
        auto const flags = static_cast<uint16_t>(input.take(1) & 0x7);
        auto const next = static_cast<uint16_t>(input.take(1) % (QUEUE_SIZE + 2));
        queue.write_descriptor(i, Descriptor { address, length, flags, next });
    }
    uint16_t const offered = static_cast<uint16_t>(input.take(1) % (QUEUE_SIZE + 2));
    for (uint16_t i = 0; i < offered; ++i)
        queue.offer(static_cast<uint16_t>(input.take(1) % (QUEUE_SIZE + 1)));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    using namespace kvmm::virtio;
    static HostSide host;
    FuzzInput input(std::span(data, size));
    kvmm::fuzz::FuzzBench bench(MEMORY_SIZE);
    auto& memory = bench.memory;
    auto& loop = bench.loop;

    auto device = vsock::VsockDevice::create(loop, GUEST_CID, host.uds_path);
    if (!device)
        std::abort(); // the previous iteration's device removed its socket
    auto transport = *bench.attach("vsock", std::move(*device));
    testing::MmioDriver driver(*transport, loop);

    testing::DriverQueue rx(memory, GuestAddress(0x10000), QUEUE_SIZE);
    testing::DriverQueue tx(memory, GuestAddress(0x20000), QUEUE_SIZE);
    testing::DriverQueue event(memory, GuestAddress(0x30000), QUEUE_SIZE);

    uint64_t const selector = input.take(1);
    uint64_t features = 0;
    if (selector & 1)
        features |= feature_bit(FEATURE_RING_EVENT_IDX);
    if (selector & 2)
        features |= feature_bit(FEATURE_RING_INDIRECT_DESC);
    driver.initialize(features, { &rx, &tx, (selector & 4) ? &event : nullptr });

    // Buffer contents: the data area, from the input (headers with the guest's CID are likely
    // enough when the input repeats them; the fuzzer finds them quickly).
    std::vector<std::byte> contents(std::min<uint64_t>(input.take(2), DATA_SIZE));
    for (auto& byte : contents)
        byte = static_cast<std::byte>(input.take(1));
    (void)memory.write(GuestAddress(DATA_BASE), contents);

    for (int round = 0; round < 2 && !input.empty(); ++round) {
        lay_out_queue(input, rx);
        lay_out_queue(input, tx);
        driver.notify(vsock::VsockDevice::RX_QUEUE);
        driver.notify(vsock::VsockDevice::TX_QUEUE);
        driver.run_event_loop();
        host.drain();
        driver.run_event_loop();
    }
    return 0;
}

// libFuzzer target: a hostile saved state for a virtio device (a snapshot file or migration
// stream someone else wrote). The first byte picks the device (block, balloon, vsock, net); the
// rest is the state payload, decoded by that device's State::decode. A state that decodes is
// restored into a fresh device, with queues re-created at a fixed layout when it says the device
// was active; a restore that succeeds must save back to the very same state, and the restored
// device must then survive a turn of each queue on guest memory that holds no rings (a queue
// Error there asks for a reset, it must never crash). Net is decoded only: its device needs a
// TAP, which a fuzzing host does not give.
//
// The block image is a small memfd reopened through /proc/self/fd; the vsock socket lives in a
// private temporary directory. The synchronous disk engine keeps each run deterministic.
#include "devices/virtio/balloon/balloon_device.h"
#include "devices/virtio/block/block_device.h"
#include "devices/virtio/net/net_device.h"
#include "devices/virtio/testing/driver_queue.h"
#include "devices/virtio/vsock/vsock_device.h"
#include "fuzz_support.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

namespace {

using namespace kvmm::virtio;
using kvmm::GuestAddress;
using kvmm::StateReader;

constexpr uint64_t MEMORY_SIZE = 1 << 20;
constexpr uint16_t QUEUE_SIZE = 16;
constexpr uint64_t QUEUE_BASE = 0x10000;
constexpr uint64_t QUEUE_STRIDE = 0x10000;
constexpr off_t IMAGE_SIZE = 64 * 1024;
constexpr uint64_t VSOCK_CID = 3;

std::string const& image_path() {
    static std::string const path = [] {
        int const fd = ::memfd_create("kvmm-state-fuzz", MFD_CLOEXEC);
        if (fd < 0 || ::ftruncate(fd, IMAGE_SIZE) != 0)
            __builtin_trap();
        return "/proc/self/fd/" + std::to_string(fd);
    }();
    return path;
}

std::string const& vsock_path() {
    static std::string const path = [] {
        char pattern[] = "/tmp/kvmm-state-fuzz-XXXXXX";
        if (::mkdtemp(pattern) == nullptr)
            __builtin_trap();
        return std::string(pattern) + "/v.sock";
    }();
    return path;
}

// What a transport would hand the device for a state that says it was active: every queue the
// state lists as set up, re-created at a fixed layout in guest RAM (rings of zeros).
std::optional<ActivationContext> context_for(std::optional<ActiveDeviceState> const& active,
                                             kvmm::fuzz::FuzzBench& bench, kvmm::virtio::VirtioInterrupt& interrupt) {
    if (!active)
        return std::nullopt;
    ActivationContext context;
    context.features = active->features;
    for (size_t i = 0; i < active->queues.size(); ++i) {
        if (!active->queues[i]) {
            context.queues.emplace_back(std::nullopt);
            continue;
        }
        testing::DriverQueue const layout(bench.memory, GuestAddress(QUEUE_BASE + i * QUEUE_STRIDE), QUEUE_SIZE);
        auto queue = Queue::create(bench.memory, layout.config(), active->features);
        if (!queue)
            __builtin_trap(); // the layout is valid whatever the features
        context.queues.emplace_back(std::move(*queue));
    }
    context.memory = &bench.memory;
    context.interrupt = &interrupt;
    context.fail = [](kvmm::Error const&) {};
    context.reschedule = [](size_t) {};
    return context;
}

// Restores `state` into `device`; when that works, the device must save the same state back and
// take a turn of each queue.
template <typename Device, typename State>
void restore_and_check(Device& device, State const& state, kvmm::fuzz::FuzzBench& bench, size_t queues) {
    VirtioInterrupt interrupt(bench.line);
    if (!device.restore(state, context_for(state.active, bench, interrupt)))
        return;
    State again;
    if constexpr (std::is_same_v<Device, BlockDevice>) {
        auto saved = device.save();
        if (!saved)
            __builtin_trap(); // a restored block device holds no request
        again = *saved;
    } else {
        again = device.save();
    }
    if (!(again == state))
        __builtin_trap();
    for (size_t i = 0; i < queues; ++i)
        device.process_queue(i);
    (void)bench.loop.run_once(std::chrono::milliseconds(0));
    device.reset();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    if (size == 0)
        return 0;
    auto const payload = std::as_bytes(std::span(data + 1, size - 1));
    StateReader reader(payload);
    kvmm::fuzz::FuzzBench bench(MEMORY_SIZE);
    switch (data[0] % 4) {
    case 0: {
        auto state = BlockState::decode(reader);
        if (!state)
            return 0;
        auto image = kvmm::DiskImage::open(image_path(), false);
        if (!image)
            return 0;
        BlockOptions options;
        options.engine = kvmm::DiskEngineKind::Sync;
        auto device = BlockDevice::create(std::move(*image), bench.loop, std::move(options));
        if (device)
            restore_and_check(**device, *state, bench, 1);
        break;
    }
    case 1: {
        auto state = BalloonState::decode(reader);
        if (!state)
            return 0;
        auto device = BalloonDevice::create(bench.loop, {});
        if (device)
            restore_and_check(**device, *state, bench, 4);
        break;
    }
    case 2: {
        auto state = vsock::VsockState::decode(reader);
        if (!state)
            return 0;
        auto device = vsock::VsockDevice::create(bench.loop, VSOCK_CID, vsock_path());
        if (device)
            restore_and_check(**device, *state, bench, 3);
        break;
    }
    default:
        (void)NetState::decode(reader);
        break;
    }
    return 0;
}

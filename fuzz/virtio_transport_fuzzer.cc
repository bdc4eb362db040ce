// libFuzzer target: a hostile driver writes any sequence of values to a virtio-mmio
// transport's registers (status transitions, features, queue setup in any order, notifications,
// config space) with the entropy and console devices behind it, while the event loop runs
// activations, resets and queue work. Nothing may crash, hang or grow without bound.
//
// Input: records of 6 bytes: [selector][offset][value x4]. Selector bit 0: device (rng or
// console); bit 1: read instead of write; bit 2: run the event loop after this access.
#include "devices/virtio/console/console_device.h"
#include "devices/virtio/mmio_transport.h"
#include "devices/virtio/rng/rng_device.h"

#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

using namespace kvmm;
using namespace kvmm::virtio;

namespace {

class NullInterruptLine final : public InterruptLine {
public:
    void set_level(bool) override {}
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    static GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 1 << 20 } });
    static bool silenced = [] {
        spdlog::set_level(spdlog::level::off); // the transport logs every guest error
        return true;
    }();
    (void)silenced;
    EventLoop loop = *EventLoop::create();
    NullInterruptLine line;
    auto rng = *MmioTransport::create("rng", std::make_unique<RngDevice>(), memory, line, loop);
    auto console =
        *MmioTransport::create("console", std::make_unique<ConsoleDevice>(make_null_sink()), memory, line, loop);
    MmioTransport* const transports[] = { rng.get(), console.get() };
    // Give the rings something to chew on: the fuzz input's tail fills guest memory too.
    (void)memory.write(GuestAddress(0x1000), std::as_bytes(std::span(data, std::min<size_t>(size, 0x8000))));
    for (size_t i = 0; i + 6 <= size; i += 6) {
        auto* transport = transports[data[i] & 1];
        uint64_t const offset = uint64_t { data[i + 1] } * 4 % 0x120;
        uint8_t bytes[4];
        std::memcpy(bytes, data + i + 2, 4);
        if (data[i] & 2)
            transport->read(offset, bytes);
        else
            transport->write(offset, bytes);
        if (data[i] & 4)
            (void)loop.run_once(std::chrono::milliseconds(0));
    }
    (void)loop.run_once(std::chrono::milliseconds(0));
    return 0;
}

// libFuzzer target: a saved virtio-mmio state (the transport's section and the device's, as a
// snapshot file or a migration stream carries them) restored into a fresh transport with the
// entropy or the console device behind it, over guest memory that the input fills too (a held
// transmit chain is walked again from guest memory). Whatever the bytes, restore_state refuses
// them or accepts them without crashing or allocating beyond its bounds; a state it accepts
// saves, restores into another transport and saves again to the same bytes, and the restored
// device then survives a few rounds of queue work.
//
// Input: [selector: bit 0 picks the console][u32 payload length][payload][guest memory image,
// written at GUEST_IMAGE_BASE]. The checked-in seeds are states saved by working devices.
#include "fuzz_support.h"

#include "devices/virtio/console/console_device.h"
#include "devices/virtio/rng/rng_device.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

using namespace kvmm;
using namespace kvmm::virtio;

namespace {

constexpr uint64_t MEMORY_SIZE = 1 << 20;
constexpr uint64_t GUEST_IMAGE_BASE = 0x10000;

std::unique_ptr<VirtioDevice> make_device(bool console) {
    if (console)
        return std::make_unique<ConsoleDevice>(make_null_sink());
    return std::make_unique<RngDevice>([](std::span<std::byte> out) -> Expected<void> {
        std::fill(out.begin(), out.end(), std::byte { 0x5a });
        return {};
    });
}

std::vector<std::byte> save(MmioTransport const& transport) {
    StateWriter writer;
    if (!transport.save_state(writer))
        std::abort(); // a restored transport has no queued command, and these devices always save
    return writer.payload();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    static bool silenced = [] {
        spdlog::set_level(spdlog::level::off); // the transport logs every guest error
        return true;
    }();
    (void)silenced;
    fuzz::FuzzInput input(std::span(data, size));
    bool const console = (input.take(1) & 1) != 0;
    auto const payload = input.bytes(static_cast<size_t>(input.take(4)));
    auto const image = input.rest();

    fuzz::FuzzBench bench(MEMORY_SIZE);
    (void)bench.memory.write(GuestAddress(GUEST_IMAGE_BASE),
                             std::as_bytes(
                                 image.first(std::min<size_t>(image.size(), MEMORY_SIZE - GUEST_IMAGE_BASE))));
    auto transport = *bench.attach(console ? "console" : "rng", make_device(console));
    StateReader reader(payload);
    if (!transport->restore_state(reader))
        return 0;

    // Accepted: from here on the state is the transport's own and must round-trip exactly.
    auto const saved = save(*transport);
    {
        auto second = *bench.attach("second", make_device(console));
        StateReader again(saved);
        if (!second->restore_state(again) || !again.at_end() || save(*second) != saved)
            std::abort();
    }
    // The restored device serves whatever the rings in the image hold, a bounded slice per round.
    for (int round = 0; round < 4; ++round)
        (void)bench.loop.run_once(std::chrono::milliseconds(0));
    if (console)
        (void)static_cast<ConsoleDevice&>(transport->device()).receive(std::span<uint8_t const>(data, size));
    (void)bench.loop.run_once(std::chrono::milliseconds(0));
    return 0;
}

// libFuzzer target: the guest drives fw_cfg (devices/fw_cfg/fw_cfg.h) with any sequence of port
// reads and writes of any width, and DMA requests whose access structure, control word, length
// and address come from the input and point anywhere: inside the small guest RAM, across its
// end, or far outside it. The device must never crash, read or write outside guest RAM, or
// grow; a bad request only sets the error bit.
#include "devices/fw_cfg/fw_cfg.h"

#include <array>
#include <cstddef>
#include <cstdint>

namespace {

constexpr uint64_t RAM_SIZE = 64 * 1024;

kvmm::GuestMemory make_memory() {
    auto memory = kvmm::GuestMemory::create({ kvmm::GuestRegionSpec { kvmm::GuestAddress(0), RAM_SIZE } });
    if (!memory)
        __builtin_trap();
    return std::move(*memory);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    static kvmm::GuestMemory memory = make_memory();
    kvmm::FwCfg device(memory);
    (void)device.add_u16(kvmm::fw_cfg::NB_CPUS, 2);
    (void)device.add_file("etc/e820", std::vector<uint8_t>(40, 0x11));
    (void)device.add_file("bootorder", { '/', 'x', '\n' });

    // Each operation is 10 bytes: kind and width, offset, then 8 bytes of value or address.
    for (size_t i = 0; i + 10 <= size; i += 10) {
        uint8_t const selector = data[i];
        uint64_t const offset = data[i + 1] % (kvmm::fw_cfg::PORT_LENGTH + 2);
        size_t const width = size_t(1) << (selector & 3);
        std::array<uint8_t, 8> value {};
        for (size_t byte = 0; byte < 8; ++byte)
            value[byte] = data[i + 2 + byte];
        switch ((selector >> 2) & 3) {
        case 0:
            device.read(offset, std::span<uint8_t>(value.data(), width));
            break;
        case 1:
            device.write(offset, std::span<uint8_t const>(value.data(), width));
            break;
        default: {
            // A DMA request: the 16-byte access structure is written into guest RAM from the
            // input (when it fits there), then started at an address the input chooses.
            uint64_t const access = (uint64_t { value[0] } | (uint64_t { value[1] } << 8)) % (RAM_SIZE + 64);
            std::array<uint8_t, 16> request {};
            for (size_t byte = 0; byte < request.size(); ++byte)
                request[byte] = data[(i + byte) % size];
            (void)memory.write(kvmm::GuestAddress(access), std::as_bytes(std::span(request)));
            std::array<uint8_t, 4> high { 0, 0, 0, static_cast<uint8_t>(selector >> 7) };
            std::array<uint8_t, 4> low { static_cast<uint8_t>(access >> 24), static_cast<uint8_t>(access >> 16),
                                         static_cast<uint8_t>(access >> 8), static_cast<uint8_t>(access) };
            device.write(kvmm::fw_cfg::DMA_OFFSET, high);
            device.write(kvmm::fw_cfg::DMA_OFFSET + 4, low);
            break;
        }
        }
    }
    return 0;
}

// libFuzzer target: the guest drives the legacy devices' registers with any sequence of reads
// and writes of any width. Every device must stay consistent: no crash, no unbounded growth.
#include "devices/legacy/cmos_rtc.h"
#include "devices/legacy/i8042.h"
#include "devices/legacy/power_control.h"
#include "devices/legacy/serial_16550.h"

#include <cstddef>
#include <cstdint>

namespace {

class NullInterruptLine final : public kvmm::InterruptLine {
public:
    void set_level(bool) override {}
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    auto irq = std::make_shared<NullInterruptLine>();
    kvmm::Serial16550 serial(irq, kvmm::make_null_sink());
    kvmm::I8042 i8042(irq, [] {});
    kvmm::CmosRtc rtc([] { return std::time_t(1795614307); });
    kvmm::PowerControl power([](kvmm::PowerEvent) {});
    kvmm::BusDevice* const devices[] = { &serial, &i8042, &rtc, &power };

    // Each operation is 3 bytes: device and width and direction, offset, value.
    for (size_t i = 0; i + 3 <= size; i += 3) {
        uint8_t const selector = data[i];
        auto* device = devices[selector & 3];
        size_t const width = size_t(1) << ((selector >> 2) & 3);
        bool const is_write = selector & 0x10;
        uint64_t const offset = data[i + 1] & 0x0f;
        uint8_t buffer[8] = { data[i + 2] };
        if (selector & 0x20) {
            uint8_t const input[] = { data[i + 2], data[i + 1] };
            serial.receive(input);
        }
        if (is_write)
            device->write(offset, std::span<uint8_t const>(buffer, width));
        else
            device->read(offset, std::span<uint8_t>(buffer, width));
    }
    return 0;
}

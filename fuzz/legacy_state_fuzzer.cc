// libFuzzer target: saved state of the legacy devices and the rate limiters as untrusted input
// (a snapshot file, a migration stream). The input goes, as it is, to every state's decode(),
// and to open_state(); whatever decodes is restored into a freshly built component. Each
// restore must either refuse or leave the component exactly at the state it was given
// (save() returns it again), and the component must then work: no crash, hang or unbounded
// allocation whatever the bytes.
//
// The same bytes are read three ways: each decode() alone from the start (so mutations reach
// every field without getting past a checksum), all sections in a row as a machine's state
// would hold them, and, when the input is a sealed container, both of those on its payload.
//
// Threading: none; each iteration builds and drops its own objects on the fuzzer's thread.
#include "base/rate_limiter.h"
#include "base/state_io.h"
#include "base/testing/manual_clock.h"
#include "base/token_bucket.h"
#include "devices/legacy/boot_marker.h"
#include "devices/legacy/cmos_rtc.h"
#include "devices/legacy/i8042.h"
#include "devices/legacy/power_control.h"
#include "devices/legacy/pvpanic.h"
#include "devices/legacy/serial_16550.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>

namespace kvmm {
namespace {

class NullInterruptLine final : public InterruptLine {
public:
    void set_level(bool) override {}
};

// A restore that succeeds must take the component exactly to the state it was given.
template <typename State>
void check_restored(Expected<void> const& restored, State const& given, State const& saved) {
    if (restored && !(saved == given))
        std::abort();
}

// A few guest accesses on the restored component's registers, reads and writes of every offset.
void exercise(BusDevice& device, uint64_t offsets) {
    for (uint64_t offset = 0; offset < offsets; ++offset) {
        uint8_t value = 0;
        device.read(offset, std::span(&value, 1));
        device.write(offset, std::span<uint8_t const>(&value, 1));
        device.read(offset, std::span(&value, 1));
    }
}

// Each of these decodes one state from `reader` and restores it into a fresh component; false
// when the decode failed (the reader is then somewhere inside the section).
bool serial(StateReader& reader) {
    auto state = Serial16550State::decode(reader);
    if (!state)
        return false;
    Serial16550 uart(std::make_shared<NullInterruptLine>(), make_null_sink());
    auto const restored = uart.restore(*state);
    check_restored(restored, *state, uart.save());
    exercise(uart, 8);
    return true;
}

bool i8042(StateReader& reader) {
    auto state = I8042State::decode(reader);
    if (!state)
        return false;
    I8042 controller(
        std::make_shared<NullInterruptLine>(), [] {}, std::make_shared<NullInterruptLine>());
    auto const restored = controller.restore(*state);
    check_restored(restored, *state, controller.save());
    exercise(controller, I8042_PORT_RANGE_LENGTH);
    return true;
}

bool cmos_rtc(StateReader& reader) {
    auto state = CmosRtcState::decode(reader);
    if (!state)
        return false;
    CmosRtc rtc([] { return std::time_t(1795614307); });
    auto const restored = rtc.restore(*state);
    check_restored(restored, *state, rtc.save());
    exercise(rtc, 2);
    return true;
}

bool pvpanic(StateReader& reader) {
    auto state = PvpanicState::decode(reader);
    if (!state)
        return false;
    Pvpanic device([](Pvpanic::Event) {});
    auto const restored = device.restore(*state);
    check_restored(restored, *state, device.save());
    return true;
}

bool power_control(StateReader& reader) {
    auto state = PowerControlState::decode(reader);
    if (!state)
        return false;
    PowerControl device([](PowerEvent) {});
    auto const restored = device.restore(*state);
    check_restored(restored, *state, device.save());
    return true;
}

bool boot_marker(StateReader& reader) {
    auto state = BootMarkerState::decode(reader);
    if (!state)
        return false;
    BootMarker marker;
    auto const restored = marker.restore(*state);
    check_restored(restored, *state, marker.save());
    return true;
}

// Spends and waits on a restored bucket, the arithmetic a hostile state would try to overflow.
// The first refill comes 146 years after the restore: a restored interval near its maximum
// then meets a time difference beyond what a signed 64-bit subtraction holds.
void exercise(TokenBucket& bucket, testing::ManualClock& clock) {
    clock.advance(std::chrono::nanoseconds(int64_t { 1 } << 62));
    (void)bucket.time_until(1);
    (void)bucket.time_until(~uint64_t { 0 });
    (void)bucket.consume(bucket.config().size);
    clock.advance(std::chrono::hours(24 * 365));
    (void)bucket.available();
    (void)bucket.time_until(bucket.config().size + 1);
}

bool token_bucket(StateReader& reader) {
    auto state = TokenBucketState::decode(reader);
    if (!state)
        return false;
    // The bucket a machine would have built from the same configuration.
    testing::ManualClock clock;
    auto bucket = TokenBucket::create(state->config, clock);
    if (!bucket)
        return true;
    auto const restored = bucket->restore(*state);
    check_restored(restored, *state, bucket->save());
    exercise(*bucket, clock);
    return true;
}

bool rate_limiter(StateReader& reader) {
    auto state = RateLimiterState::decode(reader);
    if (!state)
        return false;
    testing::ManualClock clock;
    RateLimitConfig config;
    if (state->bandwidth)
        config.bandwidth = state->bandwidth->config;
    if (state->ops)
        config.ops = state->ops->config;
    auto limiter = RateLimiter::create(config, clock);
    if (!limiter)
        return true;
    auto const restored = limiter->restore(*state);
    // A bucket given a configuration of size or refill time 0 is no bucket at all, so such a
    // state is refused; otherwise the limiter holds exactly what it was given.
    check_restored(restored, *state, limiter->save());
    clock.advance(std::chrono::nanoseconds(int64_t { 1 } << 62)); // as for a lone bucket
    limiter->on_timer();
    (void)limiter->consume(~uint64_t { 0 });
    limiter->on_timer();
    (void)limiter->consume(1);
    return true;
}

using Decoder = bool (*)(StateReader&);
constexpr Decoder DECODERS[] = { serial,        i8042,       cmos_rtc,     pvpanic,
                                 power_control, boot_marker, token_bucket, rate_limiter };

void decode_each(std::span<std::byte const> payload) {
    for (auto decoder : DECODERS) {
        StateReader reader(payload);
        decoder(reader);
    }
}

// The sections one after another, in the order above, until one fails to decode.
void decode_in_a_row(std::span<std::byte const> payload) {
    StateReader reader(payload);
    for (auto decoder : DECODERS)
        if (!decoder(reader))
            return;
}

} // namespace
} // namespace kvmm

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    auto const input = std::as_bytes(std::span(data, size));
    kvmm::decode_each(input);
    kvmm::decode_in_a_row(input);
    if (auto const payload = kvmm::open_state(input)) {
        kvmm::decode_each(*payload);
        kvmm::decode_in_a_row(*payload);
    }
    return 0;
}

// libFuzzer target: the saved vCPU and VM state (X86VcpuState, X86VmState) as untrusted input
// (a snapshot file, a migration stream). The bytes go to each decode() directly, so mutations
// reach every field, and to open_state() followed by both decoders in a row, as a machine's
// blob holds them. Whatever decodes must encode to a state that decodes to the same value:
// no crash, hang or allocation beyond the bounds the decoders state.
//
// Threading: none.
#include "base/state_io.h"
#include "hypervisor/x86_state.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

namespace kvmm {
namespace {

template <typename State>
void decode_and_check(std::span<std::byte const> bytes) {
    StateReader reader(bytes);
    auto const decoded = State::decode(reader);
    if (!decoded)
        return;
    StateWriter writer;
    decoded->encode(writer);
    StateReader again(writer.payload());
    auto const redecoded = State::decode(again);
    if (!redecoded || !(*redecoded == *decoded) || !again.at_end())
        std::abort(); // what was accepted must survive its own encoding unchanged
}

} // namespace
} // namespace kvmm

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    auto const bytes = std::as_bytes(std::span(data, size));
    kvmm::decode_and_check<kvmm::X86VcpuState>(bytes);
    kvmm::decode_and_check<kvmm::X86VmState>(bytes);
    if (auto const payload = kvmm::open_state(bytes)) {
        kvmm::StateReader reader(*payload);
        if (kvmm::X86VcpuState::decode(reader))
            (void)kvmm::X86VmState::decode(reader);
    }
    return 0;
}

// Test support for saved state (docs/ARCHITECTURE.md "Saved state"): a state's whole way
// through the format (encode, seal, open, decode) as a snapshot takes it, and the decoding of a
// hand-made payload for the bad-input tests.
//
// Threading: none; plain functions of their arguments.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"

#include <cstddef>
#include <span>
#include <utility>
#include <vector>

namespace kvmm::testing {

// The payload of one encoded `State` (no container), for tests that cut or alter it.
template <typename State>
std::vector<std::byte> encode_payload(State const& state) {
    StateWriter writer;
    state.encode(writer);
    return writer.payload();
}

// Decodes one `State` from `payload`; the payload must hold exactly that section.
template <typename State, typename... DecodeArguments>
Expected<State> decode_payload(std::span<std::byte const> payload, DecodeArguments&&... arguments) {
    StateReader reader(payload);
    auto decoded = TRY(State::decode(reader, std::forward<DecodeArguments>(arguments)...));
    if (!reader.at_end())
        return Error("saved state: bytes left after the section");
    return decoded;
}

// encode -> seal_state -> open_state -> decode.
template <typename State, typename... DecodeArguments>
Expected<State> round_trip(State const& state, DecodeArguments&&... arguments) {
    StateWriter writer;
    state.encode(writer);
    std::vector<std::byte> const blob = seal_state(writer.payload());
    auto const payload = TRY(open_state(blob));
    return decode_payload<State>(payload, std::forward<DecodeArguments>(arguments)...);
}

} // namespace kvmm::testing

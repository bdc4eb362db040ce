// A test hook for kvmmd's crash safety: named points between the steps of a journaled
// operation (a VM start) at which the daemon can be made to die as if SIGKILLed.
//
// When the environment variable KVMMD_TEST_CRASH_AT names a step, the first thread that reaches
// crash_point() with that step sends SIGKILL to its own process. Nothing is cleaned up, exactly
// as with a kill from outside, so the manager tests can kill kvmmd at every step of start and
// check that the next kvmmd finds a consistent state. Unset (the normal case), crash_point() does
// nothing. The steps are listed in docs/kvmmctl.md ("Crash safety").
//
// Threading: any thread; the variable is read once.
#pragma once

#include <string_view>

namespace kvmm {

inline constexpr char const* CRASH_AT_VARIABLE = "KVMMD_TEST_CRASH_AT";

void crash_point(std::string_view step);

} // namespace kvmm

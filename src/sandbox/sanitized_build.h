// Whether this build carries a sanitizer runtime (ASan, TSan, MSan). Those runtimes make
// system calls of their own (sigaltstack at thread start, shadow memory, reports) that no
// role's allow-list holds, so instrumented builds run kvmm unfiltered and skip the tests that
// install a filter; the release build runs those tests.
//
// Threading: a constant.
#pragma once

namespace kvmm {

inline constexpr bool SANITIZED_BUILD =
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
    true;
#else
    false;
#endif
#else
    false;
#endif

inline constexpr char const* SANITIZED_BUILD_SKIP_REASON =
    "sanitizer build: its runtime makes system calls no role's filter allows (the release build runs this test)";

} // namespace kvmm

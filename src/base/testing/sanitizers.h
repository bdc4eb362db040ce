// Test support: whether this build runs under AddressSanitizer (preset asan-ubsan or the
// fuzzers). Sanitizer runtimes need descriptors of their own while checking (UBSan's vptr
// check probes memory with pipe()), so they report false errors while a test holds the
// descriptor table full; such tests skip themselves there, and the release build runs them.
#pragma once

namespace kvmm::testing {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool SANITIZED_BUILD = true;
#elif defined(__has_feature)
inline constexpr bool SANITIZED_BUILD = __has_feature(address_sanitizer);
#else
inline constexpr bool SANITIZED_BUILD = false;
#endif

} // namespace kvmm::testing

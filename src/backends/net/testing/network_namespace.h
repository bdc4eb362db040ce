// Test support for code that needs real network interfaces (TAP backend, virtio-net device):
// runs a test body in a forked child inside a fresh network namespace (unshare(CLONE_NEWNET),
// see network_namespaces(7)), so the host's network is never touched, and configures an
// interface there the way an administrator would (kvmm itself never configures interfaces).
//
// Threading: call from the test's main thread only; run_in_network_namespace forks, and the
// child runs `body` single-threaded before it exits.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace kvmm::testing {

// Runs `body` in a forked child inside a new network namespace. The child's GoogleTest
// failures are printed by the child and turned into its exit status, which the parent checks;
// a child that cannot enter a namespace (no CAP_SYS_ADMIN, no usable /dev/net/tun) reports why
// and the calling test is skipped.
void run_in_network_namespace(std::function<void()> const& body);

// Brings interface `name` up. When `ipv4_address` is given, assigns it with a /24 netmask;
// when `mtu` is given, sets the MTU first. Uses GoogleTest assertions: call it inside
// ASSERT_NO_FATAL_FAILURE.
void configure_interface(std::string const& name, char const* ipv4_address, std::optional<int> mtu = std::nullopt);

} // namespace kvmm::testing

// Test support for saved device state (docs/ARCHITECTURE.md "Saved state"): the expectation
// every bad-input test of a device's restore_state() shares.
//
// Threading: none; call from the test's thread.
#pragma once

#include "base/state_io.h"
#include "devices/virtio/virtio_device.h"

#include <gtest/gtest.h>

#include <optional>
#include <span>
#include <string>

namespace kvmm::virtio::testing {

// Restoring `device` from `payload` (with `context`) is refused with a message that contains
// `expected`, and the device's saved state is what it was before: a refused restore changes
// nothing. `save` reads the device's state (its save(), unwrapped where it can fail).
template <typename Device, typename Save>
void expect_restore_refused(Device& device, Save const& save, std::span<std::byte const> payload,
                            std::optional<ActivationContext> context, std::string const& expected) {
    auto const before = save(device);
    StateReader reader(payload);
    auto const result = device.restore_state(reader, std::move(context));
    ASSERT_FALSE(result) << "accepted, expected: " << expected;
    EXPECT_NE(result.error().message().find(expected), std::string::npos) << result.error().message();
    EXPECT_EQ(save(device), before) << "a refused restore changes nothing";
}

} // namespace kvmm::virtio::testing

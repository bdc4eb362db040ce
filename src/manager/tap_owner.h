// Hands a TAP device to a jailed VM's uid for its run, and back (docs/kvmmctl.md, "Jailed VMs").
//
// A jailed kvmm has no CAP_NET_ADMIN: TUNSETIFF then attaches only to a persistent TAP whose
// owner (or group) it is (drivers/net/tun.c, tun_not_capable()). kvmmd, as root, opens the TAP
// by name before the start: a missing one is created persistent; either way its owner and group
// become the VM's uid:gid. restore_tap() gives an existing TAP its previous owner and group
// (-1: none) back, and deletes a TAP it created (persistence off).
//
// Threading: free functions, no shared state.
#pragma once

#include "base/expected.h"

#include <sys/types.h>

#include <string>

namespace kvmm {

struct TapRecord {
    std::string name;
    bool created { false }; // kvmmd created it for the run: deleted again by restore_tap()
    long long owner { -1 }; // the previous owner and group, -1 for none
    long long group { -1 };
};

Expected<TapRecord> hand_tap_to(std::string const& name, uid_t uid, gid_t gid);
Expected<void> restore_tap(TapRecord const& record);

} // namespace kvmm

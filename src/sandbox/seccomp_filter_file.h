// The --seccomp-filter file: kvmm's filters replaced by the administrator's, in JSON after
// Firecracker's seccompiler format (docs/security.md, "Filter file"):
//
//   { "vmm":  { "default_action": "trap", "filter_action": "allow",
//               "filter": [ { "syscall": "read" },
//                           { "syscall": "ioctl", "comment": "KVM_RUN",
//                             "args": [ { "index": 1, "type": "dword", "op": "eq", "val": 44672 } ] } ] },
//     "vcpu": { ... }, "api": { ... }, "config_boot": { ... } }
//
// vmm, vcpu and api are required; config_boot is optional and takes the api filter when
// absent (Firecracker has no such thread). Actions: allow, trap, log, kill_thread (or kill),
// kill_process, {"errno": N}. Operations: eq, ne, lt, le, gt, ge, {"masked_eq": MASK}; type
// dword compares the low 32 bits, qword all 64. Every other key, an unknown syscall name or a
// bad value is an error naming where it is.
//
// Threading: a pure function.
#pragma once

#include "base/expected.h"
#include "sandbox/seccomp_filter_spec.h"
#include "sandbox/thread_role.h"

#include <array>
#include <string>
#include <string_view>

namespace kvmm {

using SeccompRoleFilters = std::array<SeccompRoleFilter, ALL_THREAD_ROLES.size()>;

// Parses the file's text (kept apart from reading so that tests and fuzzers feed it).
Expected<SeccompRoleFilters> parse_seccomp_filter_file(std::string_view text);

// Reads (at most 1 MiB) and parses the file at `path`.
Expected<SeccompRoleFilters> load_seccomp_filter_file(std::string const& path);

} // namespace kvmm

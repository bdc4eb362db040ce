// The last steps before exec: Landlock and the privilege drop.
//
// drop_privileges() leaves the process as uid:gid with no supplementary groups and empty
// effective, permitted, inheritable, ambient and bounding capability sets, securebits that keep
// root (when --allow-root gives uid 0) from regaining capabilities at exec (capabilities(7),
// "The securebits flags"), and no_new_privs (prctl(2) PR_SET_NO_NEW_PRIVS), so neither a
// set-user-ID file nor file capabilities can raise them again. It verifies the result.
//
// restrict_file_system() applies a Landlock ruleset (Documentation/userspace-api/landlock.rst)
// that allows, beneath the jail root, every file-system access except creating device nodes,
// and handles every access the kernel's ABI knows; paths outside the jail root, still
// reachable through descriptors or magic links, are refused by the kernel. Where the kernel has
// no Landlock it returns false and the caller logs that it was skipped.
//
// Threading: affects the calling thread's credentials; call while single-threaded.
#pragma once

#include "base/expected.h"

#include <sys/types.h>

namespace kvmm::jailer {

// The Landlock ABI version, or 0 where the kernel has none (or it is disabled at boot).
int landlock_abi_version();

// Restricts the calling process to the tree under `root` (a path in the current mount
// namespace). Needs no_new_privs or CAP_SYS_ADMIN. False when Landlock is unavailable.
Expected<bool> restrict_file_system(char const* root);

Expected<void> drop_privileges(uid_t uid, gid_t gid);

} // namespace kvmm::jailer

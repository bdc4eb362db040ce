// Which host files may back guest storage (disk images and their qcow2 backing files): regular
// files and block devices, never a file of a kernel pseudo filesystem.
//
// Why: a disk path comes from API clients, config files and kvmmd definitions. /proc/self/mem
// is a regular file, so a type check alone let a client hand the guest kvmm's own memory as a
// writable disk; other /proc, /sys, debugfs or cgroup files are kernel controls whose "content"
// a guest must never read or write. The path is checked lexically (its canonical form under
// /proc or /sys) before anything is opened, the type with stat() before the open (opening some
// device nodes has effects; a FIFO would block), and the opened file again with fstat() and
// fstatfs(), which a path swapped in between or a bind mount of procfs elsewhere cannot evade.
//
// Threading: plain functions.
#pragma once

#include "base/expected.h"

#include <string>
#include <string_view>

namespace kvmm {

// Before the open: refuses a path whose canonical form lies under /proc or /sys, and one that
// exists but is neither a regular file nor a block device. A path that does not exist passes;
// the open reports it. `what` names the file in errors ("disk image").
Expected<void> check_storage_path(std::string const& path, std::string_view what);

// After the open: refuses an fd that is not a regular file or block device, or whose file
// lives on a kernel pseudo filesystem (procfs, sysfs, debugfs, tracefs, securityfs, cgroupfs,
// configfs, bpffs, efivarfs, pstore).
Expected<void> check_storage_file(int fd, std::string const& path, std::string_view what);

} // namespace kvmm

// Checks of the host resources an API request names, made when the request arrives so that a
// client hears about a missing file at the PUT that named it (400, the previous configuration
// kept), as Firecracker answers: it opens the kernel, initrd and drive files and binds the
// vsock socket while handling the PUT (vmm/src/vmm_config/boot_source.rs, drive.rs, vsock.rs).
// kvmm opens them again when the machine is built; these checks only move the error earlier.
//
// Threading: pure functions over the file system; callable from any thread.
#pragma once

#include "base/expected.h"
#include "config/vm_config.h"

#include <string>

namespace kvmm {

// The kernel and initrd (if any) can be opened for reading and are regular files.
Expected<void> check_boot_files(VmConfig const& vm);

// The image is a regular file or block device, opens with the drive's access mode, and its lock
// can be taken now (another VM using it would hold the lock: backends/disk/disk_image.h). The
// lock is released again at once. Kernel and initrd must be regular files. Neither check opens
// anything of another type, nor waits (a FIFO swapped in is opened non-blocking).
Expected<void> check_drive_file(DiskConfig const& disk);

// The directory that is to hold the vsock's Unix socket exists.
Expected<void> check_vsock_directory(VsockConfig const& vsock);

// Fails when a socket is bound to `path` (in this network namespace), whether it listens or
// not: Firecracker refuses to start on an API socket path that is in use. A socket file left by
// a process that died (no socket bound to it) is not "in use". Reads the kernel's list of Unix
// sockets through NETLINK_SOCK_DIAG (unix_diag) and compares their inode with the path's.
Expected<void> check_socket_path_unbound(std::string const& path);

} // namespace kvmm

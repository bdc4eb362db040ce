// VmJail: how kvmmd runs one VM jailed (docs/kvmmctl.md, "Jailed VMs"): under its own
// unprivileged uid from a configured range, through kvmm-jailer (docs/jailer.md), with the
// VM's files handed into the jail as hard links.
//
// Layout, for jail base BASE (default STATE_DIR/jail) and jail id ID (jail_id()):
//   BASE/kvmm/ID/root/             the jail root (kvmm-jailer gives it to the VM uid)
//   BASE/kvmm/ID/root/kernel       hard links of the definition's kernel, initrd and disks
//   BASE/kvmm/ID/root/initrd
//   BASE/kvmm/ID/root/diskN
//   BASE/kvmm/ID/root/machine.json the machine file, with the paths above
//   BASE/kvmm/ID/root/snapshot.snap a snapshot kvmm writes for kvmmd to take out (save,
//   BASE/kvmm/ID/root/snapshot.mem  snapshot), or the saved files handed in for a restore
//   BASE/kvmm/ID/root/control.sock kvmm's sockets and metrics, created by kvmm inside the jail
//   BASE/kvmm/ID/owners.json       root's record of the owners to restore (outside the root, so
//                                  the jailed process cannot change it)
// A bind mount cannot be used: kvmm-jailer binds the jail root non-recursively before
// pivot_root, so a mount made below it beforehand is not carried into the jail; and after the
// pivot nothing can be mounted into the jail's mount namespace from outside. Hard links need
// the file on the jail base's file system; another one is refused, naming both.
//
// Ownership: a writable disk is given to the VM's uid:gid (mode u+rw) for the run, and its
// previous owner and mode are restored when the VM stops (restore()). The record is written
// before the first chown, so a daemon that dies in between restores it after its restart.
// Read-only files (kernel, initrd, read-only disks) keep their owner and must be readable by
// others (the VM's uid is no member of any group).
//
// Threading: free functions, no shared state; the caller serialises the calls for one VM.
#pragma once

#include "base/expected.h"
#include "manager/state_store.h"
#include "manager/vm_definition.h"

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm {

struct JailSettings {
    std::string jailer_binary;  // absolute path of kvmm-jailer
    std::filesystem::path base; // the jailer's --chroot-base-dir
    uint32_t uid_start { 0 };   // the VM uids (and gids, same numbers) are [start, start + count)
    uint32_t uid_count { 0 };
};

// "START:COUNT": START >= 1000 (not a system account), COUNT >= 1, START + COUNT <= 2^32 - 1.
Expected<std::pair<uint32_t, uint32_t>> parse_uid_range(std::string_view text);

// uid_dir/NAME.uid: the file recording the VM's uid.
std::filesystem::path uid_record(std::filesystem::path const& uid_dir, std::string const& name);

// The VM's uid: the one recorded in uid_record(), else the first free one of the range from
// a position derived from the name (FNV-1a), recorded for the next runs. So a VM keeps its
// uid across starts and daemon restarts, and no two recorded VMs share one. Not safe against a
// concurrent call for another VM on the same directory: the caller serialises them.
Expected<uint32_t> assign_vm_uid(std::filesystem::path const& uid_dir, std::string const& name, uint32_t start,
                                 uint32_t count);
// Forgets the VM's uid (undefine).
void forget_vm_uid(std::filesystem::path const& uid_dir, std::string const& name);

// kvmm-jailer's --id: letters, digits and hyphens only (its rule), so the VM name's '_' and
// '.' become '-', and the uid is appended to keep two such names apart.
std::string jail_id(std::string const& name, uint32_t uid);

struct PreparedJail {
    std::string id;
    std::filesystem::path root;    // host path of the jail root
    VmDefinition inside;           // the definition with paths as kvmm sees them in the jail
    std::vector<std::string> argv; // the jailer's command line
    std::string control_socket;    // host paths
    std::string console_socket;
    std::string metrics_path;
};

// BASE/kvmm/ID/root: the host path of the jail root of jail `id`.
std::filesystem::path jail_root(JailSettings const& settings, std::string const& id);

// Where kvmm writes a snapshot inside the jail (save, snapshot) and reads a saved VM from (a
// restore): names in the jail root, so "/snapshot.snap" to kvmm.
inline constexpr char const* JAIL_SNAPSHOT_FILE = "snapshot.snap";
inline constexpr char const* JAIL_MEMORY_FILE = "snapshot.mem";

// Builds the jail directory for one start: removes a stale one of the same id (restoring the
// owners it recorded), links the files, gives writable disks to uid:gid, writes the machine
// file. `kvmm_arguments` are kvmm's arguments after the jailer's `--`. With `restore_from`
// (a saved VM), its files are handed in as JAIL_SNAPSHOT_FILE and JAIL_MEMORY_FILE (hard
// links given to uid:gid for the run and given back by restore_jail(), or private copies when
// they are on another file system than the jail base) and kvmm is told to restore from them.
// On failure nothing of it is left and every owner is restored.
Expected<PreparedJail> prepare_jail(JailSettings const& settings, std::string const& kvmm_binary,
                                    VmDefinition const& definition, uint32_t uid,
                                    std::vector<std::string> const& kvmm_arguments,
                                    std::optional<SavedRecord> const& restore_from = std::nullopt);

// Removes `name` from the jail root `root`, if it is there (a file kvmm left from a failed
// snapshot), so that kvmm's next one cannot be mistaken for it.
void remove_from_jail(std::filesystem::path const& root, std::string const& name);

// Moves the file `name` that kvmm (running as `uid`) wrote in the jail root `root` to the host
// path `destination`, replacing what is there: root-owned, mode 0600 (a VM's memory is as
// secret as the VM). A rename where both are on one file system, else a copy, synced, and the
// original removed. Refuses anything but a regular file of `uid` with one link: the jail root
// is the VM's, so the name may have been replaced by a link to another file.
Expected<void> take_out_of_jail(std::filesystem::path const& root, std::string const& name, uid_t uid,
                                std::string const& destination);

// After the VM's kvmm has ended: restores the recorded owners and modes and removes the jail
// directory. Quietly does nothing when there is none.
Expected<void> restore_jail(JailSettings const& settings, std::string const& id);

} // namespace kvmm

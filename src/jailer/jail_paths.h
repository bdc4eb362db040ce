// The file-system side of a jail before it is entered: checks of the chroot base and the exec
// file (refused before anything is created), and JailTree, which creates the jail's directories
// and files under the chroot base and removes exactly what it created when setup fails.
//
// Every path under the base is reached with *at() calls relative to a descriptor of the base
// opened with O_NOFOLLOW, and every component with O_NOFOLLOW, so a symlink planted inside the
// base (by an earlier jailed process, which owns its jail root) cannot send a write elsewhere.
// The descriptor stays valid after pivot_root(2), so cleanup still works from inside the jail.
//
// Threading: one thread (the jailer is single-threaded).
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <sys/types.h>

#include <string>
#include <vector>

namespace kvmm::jailer {

// Opens the chroot base: an existing directory that is not a symlink, owned by root (or by the
// jailer's effective uid) and writable by neither others nor, unless it is root's, group.
Expected<UniqueFd> open_chroot_base(std::string const& path);

// Opens the exec file: a regular file (symlinks followed) with an execute bit.
Expected<UniqueFd> open_exec_file(std::string const& path);
// Opens a regular file (symlinks followed), e.g. a shared library.
Expected<UniqueFd> open_regular_file(std::string const& path);

class JailTree {
public:
    // `jail_root` (relative to the base) is the one existing directory that need not be root's.
    explicit JailTree(UniqueFd base, std::string jail_root = {})
        : m_base(std::move(base)), m_jail_root(std::move(jail_root)) {}
    ~JailTree() = default;
    JailTree(JailTree&&) = default;
    JailTree& operator=(JailTree&&) = default;

    int base_fd() const { return m_base.get(); }

    // Creates each missing directory of `relative` (components separated by '/'); existing
    // ones must be root's directories, not symlinks, and no component may be "." or "..".
    // Only the ones created are recorded.
    Expected<void> make_directories(std::string const& relative, mode_t mode);
    // Copies the open file `source` to `relative` (which must not exist) with `mode`, root-owned.
    Expected<void> copy_file(int source, std::string const& relative, mode_t mode);
    // Hard-links `source` as `relative` where it is root-owned, writable by root alone and on
    // the same file system (the jailed user can then neither change nor replace its contents);
    // otherwise copies it as copy_file() does. Returns whether it linked.
    Expected<bool> link_or_copy_file(int source, std::string const& relative, mode_t mode);
    // Creates a character device node owned by uid:gid with mode 0600.
    Expected<void> make_device(std::string const& relative, dev_t device, uid_t uid, gid_t gid);
    // Records a file created by other means (the pid file) for removal on failure.
    void record_file(std::string const& relative) { m_created.push_back({ relative, false }); }

    // Removes what was created, newest first; directories only if empty (a file the
    // administrator placed in the jail root stays). Returns the paths it could not remove.
    std::vector<std::string> remove_created();
    // Setup succeeded: nothing is removed any more.
    void keep() { m_created.clear(); }

private:
    struct Created {
        std::string relative;
        bool directory;
    };
    UniqueFd m_base;
    std::string m_jail_root;
    std::vector<Created> m_created;
};

// Whether `path` names a character device; its device number if so.
Expected<dev_t> character_device_number(std::string const& path);

} // namespace kvmm::jailer

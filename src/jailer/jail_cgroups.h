// The VM's cgroups, as Firecracker's jailer places them (docs/jailer.md, "Jailer Operation"):
// for each hierarchy that holds a controller named by --cgroup (v1: one mount per controller
// set; v2: the one unified mount), the directory <mount>/<parent cgroup>/<id> is created, the
// settings are written to it and the jailer joins it, so kvmm and everything it starts stays
// there. On v2 each controller is first enabled in cgroup.subtree_control from the mount root
// down to the parent (Documentation/admin-guide/cgroup-v2.rst, "Enabling and Disabling"); on
// v1 a new cpuset cgroup copies cpuset.cpus and cpuset.mems from its parent, since a cpuset
// with either empty accepts no task (cgroup-v1/cpusets.rst).
//
// plan() only reads the mount table and the hierarchies: it refuses a controller that no
// mounted hierarchy offers before anything is created. The mount roots are held open, so that
// join() and cleanup work after pivot_root(2).
//
// Threading: one thread.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"
#include "jailer/jailer_options.h"

#include <string>
#include <string_view>
#include <vector>

namespace kvmm::jailer {

struct CgroupMount {
    std::string path;
    int version { 1 };
    std::vector<std::string> controllers; // v1: from the mount options; v2: empty
};

// Parses proc(5) /proc/self/mounts text for cgroup (v1) and cgroup2 mounts.
std::vector<CgroupMount> parse_cgroup_mounts(std::string_view mounts);

class JailCgroups {
public:
    // The hierarchies the options need, from `mounts` (the text of /proc/self/mounts).
    static Expected<JailCgroups> plan(JailerOptions const& options, std::string_view mounts);

    // Creates the directories and writes the settings; what it created is recorded.
    Expected<void> create();
    // Moves the calling process into every VM cgroup.
    Expected<void> join();
    // Moves the caller back to each hierarchy's root and removes the directories created,
    // newest first. Returns what could not be removed.
    std::vector<std::string> remove_created();
    void keep() { m_created.clear(); }

    // The host paths of the VM's cgroup directories (for logs and tests).
    std::vector<std::string> directories() const;

private:
    struct Hierarchy {
        std::string mount_path;
        int version { 1 };
        UniqueFd root;
        std::vector<CgroupSetting> settings;
    };
    struct Created {
        size_t hierarchy;
        std::string relative;
    };
    Expected<void> create_in(size_t index);

    std::string m_relative; // <parent>/<id>
    std::vector<Hierarchy> m_hierarchies;
    std::vector<Created> m_created;
};

} // namespace kvmm::jailer

#include "jailer/privileges.h"

#include "base/unique_fd.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/landlock.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace kvmm::jailer {
namespace {

// The access rights of each Landlock ABI (landlock.rst, "Filesystem flags"): ABI 1 has the
// first 13, ABI 2 adds REFER, ABI 3 TRUNCATE, ABI 5 IOCTL_DEV. Spelled out so that the rights
// handled are those of the running kernel, not of the header the jailer was built with.
constexpr uint64_t ACCESS_ABI_1 = (1ULL << 13) - 1;
constexpr uint64_t ACCESS_REFER = 1ULL << 13;
constexpr uint64_t ACCESS_TRUNCATE = 1ULL << 14;
constexpr uint64_t ACCESS_IOCTL_DEV = 1ULL << 15;
constexpr uint64_t ACCESS_MAKE_DEVICE = LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_BLOCK;

// Only the first field of struct landlock_ruleset_attr, which every ABI accepts.
struct RulesetAttributes {
    uint64_t handled_access_fs;
};

uint64_t handled_accesses(int abi) {
    uint64_t access = ACCESS_ABI_1;
    if (abi >= 2)
        access |= ACCESS_REFER;
    if (abi >= 3)
        access |= ACCESS_TRUNCATE;
    if (abi >= 5)
        access |= ACCESS_IOCTL_DEV;
    return access;
}

} // namespace

int landlock_abi_version() {
    auto const version = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return version < 0 ? 0 : static_cast<int>(version);
}

Expected<bool> restrict_file_system(char const* root) {
    int const abi = landlock_abi_version();
    if (abi == 0)
        return false;
    uint64_t const handled = handled_accesses(abi);
    RulesetAttributes attributes { handled };
    UniqueFd ruleset(static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attributes, sizeof(attributes), 0)));
    if (!ruleset.is_valid())
        return Error::from_errno(fmt::format("landlock_create_ruleset (ABI {})", abi));
    UniqueFd root_fd(::open(root, O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd.is_valid())
        return Error::from_errno(fmt::format("opening {} for the Landlock rule", root));
    landlock_path_beneath_attr rule {};
    rule.allowed_access = handled & ~ACCESS_MAKE_DEVICE;
    rule.parent_fd = root_fd.get();
    if (::syscall(SYS_landlock_add_rule, ruleset.get(), LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0)
        return Error::from_errno(fmt::format("landlock_add_rule for {}", root));
    if (::syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0)
        return Error::from_errno("landlock_restrict_self");
    return true;
}

Expected<void> drop_privileges(uid_t uid, gid_t gid) {
    // While still privileged (CAP_SETPCAP): uid 0 gets no capabilities at exec, and none of
    // these bits can be turned off again.
    unsigned long const securebits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |
                                     SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
                                     SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    if (::prctl(PR_SET_SECUREBITS, securebits, 0, 0, 0) != 0)
        return Error::from_errno(fmt::format("prctl(PR_SET_SECUREBITS, {:#x})", securebits));
    // The bounding set: capability numbers until the kernel says EINVAL (its CAP_LAST_CAP;
    // /proc is not mounted in the jail).
    for (unsigned long capability = 0;; ++capability) {
        if (::prctl(PR_CAPBSET_READ, capability, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break;
            return Error::from_errno(fmt::format("prctl(PR_CAPBSET_READ, {})", capability));
        }
        if (::prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0)
            return Error::from_errno(fmt::format("prctl(PR_CAPBSET_DROP, {})", capability));
    }
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
        return Error::from_errno("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    if (::setgroups(0, nullptr) != 0)
        return Error::from_errno("setgroups(0) (dropping supplementary groups)");
    if (::setresgid(gid, gid, gid) != 0)
        return Error::from_errno(fmt::format("setresgid({})", gid));
    if (::setresuid(uid, uid, uid) != 0)
        return Error::from_errno(fmt::format("setresuid({})", uid));
    // A change away from uid 0 clears the sets already; uid 0 (--allow-root) needs this.
    __user_cap_header_struct header { _LINUX_CAPABILITY_VERSION_3, 0 };
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] {};
    if (::syscall(SYS_capset, &header, data) != 0)
        return Error::from_errno("capset (clearing every capability)");
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return Error::from_errno("prctl(PR_SET_NO_NEW_PRIVS)");

    // Verify rather than trust: a kernel that ignored one step must not yield a privileged jail.
    if (::syscall(SYS_capget, &header, data) != 0)
        return Error::from_errno("capget");
    for (auto const& word : data)
        if (word.effective != 0 || word.permitted != 0 || word.inheritable != 0)
            return Error("capabilities remain after the drop");
    if (::prctl(PR_CAPBSET_READ, 0, 0, 0, 0) != 0)
        return Error("the bounding set still holds CAP_CHOWN after the drop");
    uid_t real = 0, effective = 0, saved = 0;
    if (::getresuid(&real, &effective, &saved) != 0 || real != uid || effective != uid || saved != uid)
        return Error::format("uid is {}/{}/{} after the drop, not {}", real, effective, saved, uid);
    return {};
}

} // namespace kvmm::jailer

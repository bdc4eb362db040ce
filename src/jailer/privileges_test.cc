#include "jailer/privileges.h"

#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <functional>

namespace kvmm::jailer {
namespace {

// Runs `check` in a forked child (credential changes must not reach the test process); the
// child's exit status is the number of the first failed step, 0 when all held.
int in_child(std::function<int()> const& check) {
    pid_t const child = ::fork();
    if (child == 0)
        ::_exit(check());
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

TEST(DropPrivileges, LeavesTheGivenIdsWithEveryCapabilitySetEmpty) {
    if (::geteuid() != 0)
        GTEST_SKIP() << "dropping privileges needs root";
    int const failed = in_child([] {
        if (!drop_privileges(12345, 12346))
            return 1;
        uid_t real = 0, effective = 0, saved = 0;
        ::getresuid(&real, &effective, &saved);
        if (real != 12345 || effective != 12345 || saved != 12345)
            return 2;
        gid_t group = 0, effective_group = 0, saved_group = 0;
        ::getresgid(&group, &effective_group, &saved_group);
        if (group != 12346 || effective_group != 12346 || saved_group != 12346 || ::getgroups(0, nullptr) != 0)
            return 3;
        __user_cap_header_struct header { _LINUX_CAPABILITY_VERSION_3, 0 };
        __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] {};
        ::syscall(SYS_capget, &header, data);
        for (auto const& word : data)
            if (word.effective != 0 || word.permitted != 0 || word.inheritable != 0)
                return 4;
        for (int capability = 0; ::prctl(PR_CAPBSET_READ, capability, 0, 0, 0) >= 0; ++capability)
            if (::prctl(PR_CAPBSET_READ, capability, 0, 0, 0) != 0)
                return 5;
        if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
            return 6;
        if (::setuid(0) == 0)
            return 7;
        return 0;
    });
    EXPECT_EQ(failed, 0);
}

TEST(DropPrivileges, RootStaysRootWithoutCapabilities) {
    if (::geteuid() != 0)
        GTEST_SKIP() << "dropping privileges needs root";
    int const failed = in_child([] {
        if (!drop_privileges(0, 0))
            return 1;
        if (::getuid() != 0)
            return 2;
        // Root without CAP_CHOWN or CAP_DAC_OVERRIDE: no change of another's file.
        if (::chown("/proc/self/exe", 1, 1) == 0)
            return 3;
        if (::prctl(PR_CAPBSET_READ, 0, 0, 0, 0) != 0)
            return 4;
        return 0;
    });
    EXPECT_EQ(failed, 0);
}

TEST(Landlock, LimitsTheFileSystemToTheJailRootAndRefusesDeviceNodes) {
    if (landlock_abi_version() == 0)
        GTEST_SKIP() << "this kernel has no Landlock";
    kvmm::testing::TemporaryDirectory jail("landlock-root");
    std::ofstream(jail / "inside") << "inside";
    int const failed = in_child([&] {
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            return 1;
        auto const restricted = restrict_file_system(jail.path().c_str());
        if (!restricted || !*restricted)
            return 2;
        int const inside = ::open((jail / "inside").c_str(), O_RDONLY | O_CLOEXEC);
        if (inside < 0)
            return 3;
        ::close(inside);
        // Outside the root, even for root: EACCES from Landlock.
        if (::open("/etc/passwd", O_RDONLY | O_CLOEXEC) >= 0 || errno != EACCES)
            return 4;
        // A regular file may be created in the root, a device node may not (CAP_MKNOD or not).
        int const created = ::open((jail / "new").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (created < 0)
            return 5;
        ::close(created);
        if (::mknod((jail / "null").c_str(), S_IFCHR | 0600, makedev(1, 3)) == 0 || errno != EACCES)
            return 6;
        return 0;
    });
    EXPECT_EQ(failed, 0);
}

} // namespace
} // namespace kvmm::jailer

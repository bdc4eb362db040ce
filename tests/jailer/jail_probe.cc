// jail_probe: a test program that kvmm-jailer runs in place of kvmm (jailer_test.cc). It
// reports, one "key=value" line each, what a process in the jail can see and do, then
// "report=done", and waits until its standard input closes (or --wait-seconds pass; with
// --sleep it ignores standard input), so that
// the test can also look at it from outside through /proc/PID.
//
// Test code only: it is never installed and never built into kvmm.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void report(char const* key, std::string const& value) { std::printf("%s=%s\n", key, value.c_str()); }

std::string errno_name(int error) { return error == 0 ? "ok" : std::strerror(error); }

// The result of opening a path for reading: "ok" or the errno text.
std::string try_open(char const* path) {
    int const fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno_name(errno);
    ::close(fd);
    return "ok";
}

std::string root_listing() {
    std::vector<std::string> names;
    DIR* directory = ::opendir("/");
    if (directory == nullptr)
        return "error:" + errno_name(errno);
    while (auto* entry = ::readdir(directory))
        if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0)
            names.emplace_back(entry->d_name);
    ::closedir(directory);
    std::sort(names.begin(), names.end());
    std::string joined;
    for (auto const& name : names)
        joined += (joined.empty() ? "" : ",") + name;
    return joined;
}

} // namespace

int main(int argc, char** argv) {
    int wait_seconds = 30;
    std::string arguments;
    for (int index = 1; index < argc; ++index) {
        arguments += (index > 1 ? " " : "") + std::string(argv[index]);
        if (std::strncmp(argv[index], "--wait-seconds=", 15) == 0)
            wait_seconds = std::atoi(argv[index] + 15);
    }
    report("arguments", arguments);
    uid_t real = 0, effective = 0, saved = 0;
    ::getresuid(&real, &effective, &saved);
    report("uid", std::to_string(real) + "/" + std::to_string(effective) + "/" + std::to_string(saved));
    gid_t real_group = 0, effective_group = 0, saved_group = 0;
    ::getresgid(&real_group, &effective_group, &saved_group);
    report("gid",
           std::to_string(real_group) + "/" + std::to_string(effective_group) + "/" + std::to_string(saved_group));
    report("groups", std::to_string(::getgroups(0, nullptr)));

    __user_cap_header_struct header { _LINUX_CAPABILITY_VERSION_3, 0 };
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] {};
    ::syscall(SYS_capget, &header, data);
    report("cap_effective", std::to_string(data[0].effective | data[1].effective));
    report("cap_permitted", std::to_string(data[0].permitted | data[1].permitted));
    report("cap_inheritable", std::to_string(data[0].inheritable | data[1].inheritable));
    int bounding = 0;
    for (int capability = 0; ::prctl(PR_CAPBSET_READ, capability, 0, 0, 0) >= 0; ++capability)
        bounding += ::prctl(PR_CAPBSET_READ, capability, 0, 0, 0);
    report("cap_bounding_count", std::to_string(bounding));
    report("no_new_privs", std::to_string(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)));
    report("environment_empty", environ == nullptr || environ[0] == nullptr ? "1" : "0");

    report("root", root_listing());
    report("open_etc_passwd", try_open("/etc/passwd"));
    report("open_proc_self_status", try_open("/proc/self/status"));
    report("open_dev_kvm", try_open("/dev/kvm"));
    // Creating a device node needs CAP_MKNOD (and Landlock refuses it besides).
    int const made = ::mknod("/probe-null", S_IFCHR | 0600, makedev(1, 3));
    report("mknod", made == 0 ? "ok" : errno_name(errno));
    if (made == 0)
        ::unlink("/probe-null");
    report("setuid_0", ::setuid(0) == 0 ? "ok" : errno_name(errno));
    // The process that started the jailer (root, outside the jail): neither traced nor signalled.
    pid_t const parent = ::getppid();
    if (parent > 1) {
        // PTRACE_SEIZE has PTRACE_ATTACH's permission check without stopping the tracee, so a
        // probe run outside a jail (as root) does not stop its parent; it lets go at once.
        bool const seized = ::ptrace(PTRACE_SEIZE, parent, nullptr, nullptr) == 0;
        report("ptrace_parent", seized ? "ok" : errno_name(errno));
        if (seized)
            ::ptrace(PTRACE_DETACH, parent, nullptr, nullptr);
        report("signal_parent", ::kill(parent, 0) == 0 ? "ok" : errno_name(errno));
    }
    // Open descriptors above stderr: the jailer closes all it inherited.
    int open_above_stderr = 0;
    for (int fd = 3; fd < 1024; ++fd)
        open_above_stderr += ::fcntl(fd, F_GETFD) >= 0 ? 1 : 0;
    report("descriptors_above_2", std::to_string(open_above_stderr));
    report("pid", std::to_string(::getpid()));
    report("report", "done");
    std::fflush(stdout);

    // --sleep: with --daemonize stdin is /dev/null, which is always readable.
    if (arguments.find("--sleep") != std::string::npos) {
        ::sleep(static_cast<unsigned>(wait_seconds));
        return 0;
    }
    pollfd input { STDIN_FILENO, POLLIN, 0 };
    ::poll(&input, 1, wait_seconds * 1000);
    return 0;
}

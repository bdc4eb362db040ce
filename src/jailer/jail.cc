#include "jailer/jail.h"

#include "base/file.h"
#include "base/unique_fd.h"
#include "jailer/jail_cgroups.h"
#include "jailer/jail_paths.h"
#include "jailer/privileges.h"
#include "jailer/shared_libraries.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace kvmm::jailer {
namespace {

constexpr uint64_t MAX_MOUNTS_SIZE = 4 << 20;

uint64_t clock_us(clockid_t clock) {
    timespec now {};
    ::clock_gettime(clock, &now);
    return static_cast<uint64_t>(now.tv_sec) * 1000000 + static_cast<uint64_t>(now.tv_nsec) / 1000;
}

// The device nodes a VM needs, with the numbers of devices/admin-guide/devices.txt; the host's
// own node's number is preferred (userfaultfd has a dynamic misc minor, so only the host's).
struct DeviceNode {
    char const* path; // inside the jail root, and on the host
    std::optional<dev_t> fixed;
};
DeviceNode const DEVICE_NODES[] = {
    { "dev/kvm", makedev(10, 232) },
    { "dev/net/tun", makedev(10, 200) },
    { "dev/urandom", makedev(1, 9) },
    { "dev/userfaultfd", std::nullopt },
};

struct PlannedDevice {
    std::string path;
    dev_t number;
};

// Everything the jail needs, found and opened before anything is created.
struct Plan {
    std::string root; // <exec name>/<id>/root, relative to the chroot base
    UniqueFd exec_fd;
    std::vector<std::pair<std::string, UniqueFd>> libraries; // host path, open file
    std::vector<PlannedDevice> devices;
    UniqueFd netns;
    UniqueFd dev_null;
};

Expected<Plan> make_plan(JailerOptions const& options) {
    Plan plan;
    plan.root = options.exec_name() + "/" + options.id + "/root";
    plan.exec_fd = TRY(open_exec_file(options.exec_file));
    for (auto const& path : TRY(shared_libraries(options.exec_file, plan.exec_fd.get()))) {
        auto file = TRY(open_regular_file(path).with_context("a library of the exec file"));
        plan.libraries.emplace_back(path, std::move(file));
    }
    for (auto const& node : DEVICE_NODES) {
        auto const host = "/" + std::string(node.path);
        auto number = character_device_number(host);
        if (number)
            plan.devices.push_back({ node.path, *number });
        else if (node.fixed)
            plan.devices.push_back({ node.path, *node.fixed });
        else
            spdlog::info("{} is not on this host ({}); the jail gets none", host, number.error().message());
    }
    if (options.netns) {
        plan.netns = UniqueFd(::open(options.netns->c_str(), O_RDONLY | O_CLOEXEC));
        if (!plan.netns.is_valid())
            return Error::from_errno(fmt::format("--netns {}", *options.netns));
        struct statfs file_system {};
        if (::fstatfs(plan.netns.get(), &file_system) != 0 || file_system.f_type != NSFS_MAGIC)
            return Error::format("--netns {}: is not a namespace handle (such as /var/run/netns/NAME)", *options.netns);
    }
    if (options.daemonize) {
        plan.dev_null = UniqueFd(::open("/dev/null", O_RDWR | O_CLOEXEC));
        if (!plan.dev_null.is_valid())
            return Error::from_errno("opening /dev/null for --daemonize");
    }
    return plan;
}

Expected<void> set_resource_limits(JailerOptions const& options) {
    auto limits = options.resource_limits;
    bool has_open_files = false;
    for (auto const& limit : limits)
        has_open_files = has_open_files || limit.resource == Resource::OpenFiles;
    if (!has_open_files)
        limits.push_back({ Resource::OpenFiles, DEFAULT_OPEN_FILES_LIMIT });
    for (auto const& limit : limits) {
        rlimit const value { limit.value, limit.value };
        bool const files = limit.resource == Resource::OpenFiles;
        if (::setrlimit(files ? RLIMIT_NOFILE : RLIMIT_FSIZE, &value) != 0)
            return Error::from_errno(fmt::format("--resource-limit {}={}", files ? "no-file" : "fsize", limit.value));
    }
    return {};
}

// Step 4: a private mount namespace whose root is the jail root (pivot_root(2), "NOTES":
// the new root must be a mount point, hence the bind mount of the directory onto itself).
Expected<void> enter_jail_root(std::string const& root_path, int root_fd) {
    if (::unshare(CLONE_NEWNS) != 0)
        return Error::from_errno("unshare(CLONE_NEWNS)");
    // No mount event of ours may reach the host's namespace (pivot_root needs a non-shared root).
    if (::mount(nullptr, "/", nullptr, MS_SLAVE | MS_REC, nullptr) != 0)
        return Error::from_errno("making / a recursive slave mount");
    if (::mount(root_path.c_str(), root_path.c_str(), nullptr, MS_BIND, nullptr) != 0)
        return Error::from_errno(fmt::format("bind-mounting {} onto itself", root_path));
    if (::chdir(root_path.c_str()) != 0)
        return Error::from_errno(fmt::format("chdir {}", root_path));
    // The directory reached by name must be the one checked and filled through descriptors.
    struct stat by_name {};
    struct stat by_fd {};
    if (::stat(".", &by_name) != 0 || ::fstat(root_fd, &by_fd) != 0 || by_name.st_ino != by_fd.st_ino ||
        by_name.st_dev != by_fd.st_dev)
        return Error::format("{} changed while the jail was built", root_path);
    if (::mkdir("old_root", 0700) != 0)
        return Error::from_errno(fmt::format("creating {}/old_root", root_path));
    if (::syscall(SYS_pivot_root, ".", "old_root") != 0) {
        auto error = Error::from_errno(fmt::format("pivot_root into {}", root_path));
        ::rmdir("old_root");
        return error;
    }
    if (::umount2("old_root", MNT_DETACH) != 0)
        return Error::from_errno("detaching the old root");
    if (::rmdir("old_root") != 0)
        return Error::from_errno("removing /old_root");
    if (::chroot(".") != 0 || ::chdir("/") != 0)
        return Error::from_errno("chroot into the jail root");
    return {};
}

// Undoes a failed run: what the jail tree and the cgroups recorded, and the jail root's owner.
class Rollback {
public:
    Rollback(JailTree& tree, JailCgroups& cgroups) : m_tree(tree), m_cgroups(cgroups) {}
    ~Rollback() {
        if (m_done)
            return;
        if (m_root_owner && ::fchown(m_root_owner->fd.get(), m_root_owner->uid, m_root_owner->gid) != 0)
            spdlog::error("could not give the jail root back to {}:{}: {}", m_root_owner->uid, m_root_owner->gid,
                          std::strerror(errno));
        auto left = m_cgroups.remove_created();
        auto files = m_tree.remove_created();
        left.insert(left.end(), files.begin(), files.end());
        for (auto const& path : left)
            spdlog::error("could not remove {} after the failed setup", path);
    }
    Rollback(Rollback const&) = delete;
    Rollback& operator=(Rollback const&) = delete;

    // Keeps a descriptor of its own: the caller's may be closed before this runs.
    void record_owner(int fd, uid_t uid, gid_t gid) {
        m_root_owner = Owner { UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)), uid, gid };
    }
    void keep() {
        m_done = true;
        m_tree.keep();
        m_cgroups.keep();
    }

private:
    struct Owner {
        UniqueFd fd;
        uid_t uid;
        gid_t gid;
    };
    JailTree& m_tree;
    JailCgroups& m_cgroups;
    std::optional<Owner> m_root_owner;
    bool m_done { false };
};

// --new-pid-ns: the parent stays outside the new namespace, writes the child's host pid to the
// pid file in the jail and exits; the child waits for that (so a failure of the child can
// remove the pid file too) and goes on. Returns in the child only.
Expected<void> fork_into_pid_namespace(JailerOptions const& options, JailTree& tree, std::string const& root,
                                       Rollback& rollback, std::optional<uint64_t>& parent_cpu_time_us) {
    if (::unshare(CLONE_NEWPID) != 0)
        return Error::from_errno("unshare(CLONE_NEWPID)");
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
        return Error::from_errno("pipe for --new-pid-ns");
    UniqueFd read_end(pipe_fds[0]);
    UniqueFd write_end(pipe_fds[1]);
    auto const pid_file = root + "/" + options.exec_name() + ".pid";
    parent_cpu_time_us = clock_us(CLOCK_PROCESS_CPUTIME_ID);
    pid_t const child = ::fork();
    if (child < 0)
        return Error::from_errno("fork into the new PID namespace");
    if (child > 0) {
        // The child owns the jail now; the parent removes nothing.
        rollback.keep();
        read_end.reset();
        UniqueFd file(
            ::openat(tree.base_fd(), pid_file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
        auto const text = fmt::format("{}\n", child);
        if (!file.is_valid() || ::write(file.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
            spdlog::error("writing the pid file {}: {}", pid_file, std::strerror(errno));
            ::_exit(1);
        }
        char const ready = 'r';
        if (::write(write_end.get(), &ready, 1) != 1)
            ::_exit(1);
        ::_exit(0);
    }
    write_end.reset();
    char ready = 0;
    ssize_t got = 0;
    while ((got = ::read(read_end.get(), &ready, 1)) < 0 && errno == EINTR) {
    }
    if (got != 1)
        return Error::format("the jailer's parent did not write {}", pid_file);
    tree.record_file(pid_file);
    return {};
}

} // namespace

StartTimes current_times() { return { clock_us(CLOCK_MONOTONIC), clock_us(CLOCK_PROCESS_CPUTIME_ID) }; }

std::vector<std::string> exec_arguments(JailerOptions const& options, StartTimes const& start, uint64_t cpu_time_us,
                                        std::optional<uint64_t> parent_cpu_time_us) {
    std::vector<std::string> arguments { options.exec_name(), "--id=" + options.id,
                                         fmt::format("--start-time-us={}", start.monotonic_us),
                                         fmt::format("--start-time-cpu-us={}", cpu_time_us) };
    if (parent_cpu_time_us)
        arguments.push_back(fmt::format("--parent-cpu-time-us={}", *parent_cpu_time_us));
    arguments.insert(arguments.end(), options.exec_arguments.begin(), options.exec_arguments.end());
    return arguments;
}

Expected<void> close_inherited_descriptors() {
    if (::syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
        return Error::from_errno("close_range(3, ~0) (closing inherited descriptors)");
    return {};
}

Error run_jail(JailerOptions const& options, StartTimes const& start) {
    // 1. Checks and opens; nothing is created on failure.
    auto base = open_chroot_base(options.chroot_base);
    if (!base)
        return base.error();
    auto plan = make_plan(options);
    if (!plan)
        return plan.error();
    std::string mounts;
    if (options.joins_cgroup()) {
        auto text = read_text_file("/proc/self/mounts", MAX_MOUNTS_SIZE);
        if (!text)
            return text.error();
        mounts = std::move(*text);
    }
    auto cgroups = JailCgroups::plan(options, mounts);
    if (!cgroups)
        return cgroups.error();

    JailTree tree(std::move(*base), plan->root);
    Rollback rollback(tree, *cgroups);
    auto const& root = plan->root;
    auto const build = [&]() -> Expected<void> {
        // 2. The jail's files.
        TRY(tree.make_directories(root, 0755));
        TRY(tree.link_or_copy_file(plan->exec_fd.get(), root + "/" + options.exec_name(), 0555));
        for (auto const& [path, file] : plan->libraries) {
            auto const inside = root + path;
            TRY(tree.make_directories(inside.substr(0, inside.rfind('/')), 0755));
            TRY(tree.link_or_copy_file(file.get(), inside, 0555));
        }
        TRY(tree.make_directories(root + "/dev/net", 0755));
        for (auto const& device : plan->devices)
            TRY(tree.make_device(root + "/" + device.path, device.number, options.uid, options.gid));
        return {};
    };
    if (auto built = build(); !built)
        return built.error();

    UniqueFd root_fd(::openat(tree.base_fd(), root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat root_status {};
    if (!root_fd.is_valid() || ::fstat(root_fd.get(), &root_status) != 0)
        return Error::from_errno(fmt::format("opening the jail root {}", root));
    rollback.record_owner(root_fd.get(), root_status.st_uid, root_status.st_gid);
    // kvmm creates its API and vsock sockets in the jail root (Firecracker's jailer does the same).
    if (::fchown(root_fd.get(), options.uid, options.gid) != 0)
        return Error::from_errno(fmt::format("giving the jail root to {}:{}", options.uid, options.gid));

    // 3. cgroups, resource limits, network namespace.
    std::optional<uint64_t> parent_cpu_time_us;
    auto const enter = [&]() -> Expected<void> {
        TRY(cgroups->create());
        TRY(set_resource_limits(options));
        if (plan->netns.is_valid() && ::setns(plan->netns.get(), CLONE_NEWNET) != 0)
            return Error::from_errno(fmt::format("joining the network namespace {}", *options.netns));
        plan->netns.reset();
        // 4. The jail root becomes /.
        TRY(enter_jail_root(options.chroot_base + "/" + root, root_fd.get()));
        // 5. Session and PID namespace.
        if (options.daemonize) {
            if (::setsid() < 0)
                return Error::from_errno("--daemonize: setsid (the jailer must not be a process group leader)");
            for (int target : { STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO })
                if (::dup2(plan->dev_null.get(), target) < 0)
                    return Error::from_errno("--daemonize: redirecting stdio to /dev/null");
            plan->dev_null.reset();
        }
        if (options.new_pid_ns)
            TRY(fork_into_pid_namespace(options, tree, root, rollback, parent_cpu_time_us));
        // 6. cgroups joined last: the jailer's own earlier work is not charged to the VM.
        TRY(cgroups->join());
        auto const landlocked = TRY(restrict_file_system("/"));
        if (!landlocked)
            spdlog::warn("Landlock is not available in this kernel; the jail relies on pivot_root alone");
        TRY(drop_privileges(options.uid, options.gid));
        return {};
    };
    if (auto entered = enter(); !entered)
        return entered.error();

    auto const arguments = exec_arguments(options, start, clock_us(CLOCK_PROCESS_CPUTIME_ID), parent_cpu_time_us);
    std::vector<char*> argv;
    for (auto const& argument : arguments)
        argv.push_back(const_cast<char*>(argument.c_str()));
    argv.push_back(nullptr);
    char* environment[] = { nullptr };
    auto const program = "/" + options.exec_name();
    // Past the privilege drop nothing can be removed any more: a failed exec leaves the jail.
    rollback.keep();
    ::execve(program.c_str(), argv.data(), environment);
    int const exec_error = errno; // before the message's formatting can change it
    return Error::from_errno(fmt::format("exec {} in the jail {}/{} (the jail is left in place)", program,
                                         options.chroot_base, root),
                             exec_error);
}

} // namespace kvmm::jailer

#include "sandbox/seccomp_table.h"

#include <seccomp.h>

#include <cerrno>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>

namespace kvmm {

namespace {

constexpr ArgumentCondition any() { return {}; }

constexpr ArgumentCondition no_exec(uint8_t index) {
    return { .kind = ArgumentCondition::Kind::NoExec, .index = index };
}

constexpr ArgumentCondition one_of(uint8_t index, uint64_t a, uint64_t b = 0, uint8_t count = 1) {
    return { .kind = ArgumentCondition::Kind::OneOf, .index = index, .values = { a, b }, .value_count = count };
}

constexpr ArgumentCondition flags_set(uint8_t index, uint64_t flags) {
    return { .kind = ArgumentCondition::Kind::FlagsSet, .index = index, .values = { flags }, .value_count = 1 };
}

constexpr ArgumentCondition ioctl(IoctlGroup group) {
    return { .kind = ArgumentCondition::Kind::Ioctl, .index = 1, .group = group };
}

constexpr ArgumentCondition fail_with(int error_number) {
    return { .kind = ArgumentCondition::Kind::FailErrno,
             .values = { static_cast<uint64_t>(error_number) },
             .value_count = 1 };
}

constexpr unsigned ROLE_CONTROL = ROLE_API | ROLE_CONFIG_BOOT; // the API object's threads
constexpr unsigned ROLE_FILES = ROLE_VMM | ROLE_CONTROL;       // every thread but the vCPUs
constexpr unsigned ROLE_EVENT_LOOPS = ROLE_VMM | ROLE_API;     // the threads running an EventLoop

// Every syscall any kvmm thread makes once it entered its sandbox. Not listed, so trapping:
// execve/execveat, ptrace, process_vm_*, fork (clone without CLONE_THREAD), mount, bpf,
// perf_event_open, keyctl, setuid and friends, socket families other than AF_UNIX and
// netlink's sock_diag, and (on the vCPU threads) every file system call.
constexpr SeccompTableRow TABLE[] = {
    // --- every thread: the C and C++ runtimes, logging, locks --------------------------------
    { "write", ROLE_ALL, any(),
      "log lines (spdlog), eventfd signals (VmLifecycle, devices' interrupts), the SIGSYS report" },
    { "futex", ROLE_ALL, any(), "kvmm::Mutex, condition variables (VcpuThread commands, call_on_loop answers)" },
    { "mmap", ROLE_ALL, no_exec(2), "malloc arenas and thread stacks; never executable memory" },
    { "mprotect", ROLE_ALL, no_exec(2), "malloc growing an arena, thread stack guards; never executable memory" },
    { "munmap", ROLE_ALL, any(), "free of large blocks, thread stacks" },
    { "mremap", ROLE_ALL, any(), "realloc of large buffers" },
    { "madvise", ROLE_ALL, any(),
      "glibc releasing a finished thread's stack and trimming arenas; the balloon's MADV_DONTNEED" },
    { "brk", ROLE_ALL, any(), "malloc's main arena" },
    { "rt_sigprocmask", ROLE_ALL, any(), "std::thread start and end, the stop signals blocked by Machine::run" },
    { "rt_sigreturn", ROLE_ALL, any(), "return from the vCPU kick signal's handler (VcpuThread::kick)" },
    { "exit", ROLE_ALL, any(), "a thread ends" },
    { "exit_group", ROLE_ALL, any(), "kvmm exits; the SIGSYS report's _exit" },
    { "gettid", ROLE_ALL, any(), "spdlog's thread id" },
    { "getpid", ROLE_ALL, any(), "pthread_kill, spdlog" },
    { "sched_yield", ROLE_ALL, any(), "spinning locks in the C++ runtime" },
    { "clock_gettime", ROLE_ALL, any(), "timestamps where the vDSO falls back to the syscall" },
    { "clock_nanosleep", ROLE_ALL, any(), "std::this_thread::sleep_for in bounded retries" },
    { "nanosleep", ROLE_ALL, any(), "std::this_thread::sleep_for in bounded retries" },
    { "time", ROLE_ALL, any(), "the RTC's clock (CmosRtc on the vCPU threads) where the vDSO falls back" },
    { "gettimeofday", ROLE_ALL, any(), "timestamps where the vDSO falls back to the syscall" },
    { "restart_syscall", ROLE_ALL, any(), "a futex or sleep interrupted by the vCPU kick signal" },

    // --- vCPU threads -------------------------------------------------------------------------
    { "ioctl", ROLE_VCPU | ROLE_VMM, ioctl(IoctlGroup::KvmVcpuRun),
      "VcpuThread::thread_main; the event loop's filter is inherited by vCPU threads that resume() starts" },
    { "ioctl", ROLE_VCPU | ROLE_VMM, ioctl(IoctlGroup::KvmVcpuDiagnostics),
      "VcpuThread::report_death's register dump (KVM_GET_REGS, KVM_GET_SREGS)" },
    { "ioctl", ROLE_VCPU | ROLE_VMM, ioctl(IoctlGroup::KvmInterruptLine),
      "GsiInterruptLine: the serial port, i8042 and RTC raise their IRQ from a register write" },

    // --- the event loop (main thread) --------------------------------------------------------
    { "ioctl", ROLE_VMM, ioctl(IoctlGroup::KvmDeviceWiring), "a virtio device's ioeventfds and irqfd on reset" },
    { "ioctl", ROLE_VMM, ioctl(IoctlGroup::KvmSaveState), "Machine::save_state (PUT /snapshot/create, paused)" },
    { "ioctl", ROLE_VMM | ROLE_CONTROL, ioctl(IoctlGroup::KvmDirtyLog),
      "Machine::take_dirty_pages: PUT /snapshot/create of a Diff writes the memory file on the API thread" },
    { "ioctl", ROLE_VMM, ioctl(IoctlGroup::Terminal), "the stdio console restoring the terminal mode" },
    { "ioctl", ROLE_VMM, ioctl(IoctlGroup::BlockDevice), "DiskImage size and BLKDISCARD of a block-device image" },
    { "ioctl", ROLE_VMM, ioctl(IoctlGroup::Tap), "Tap::set_offloads when the virtio-net driver negotiates" },
    { "ioctl", ROLE_EVENT_LOOPS, ioctl(IoctlGroup::SocketQueue), "ApiServer: unread bytes of a closing client" },
    { "epoll_wait", ROLE_EVENT_LOOPS, any(), "EventLoop::run" },
    { "epoll_pwait", ROLE_EVENT_LOOPS, any(), "EventLoop::run" },
    { "epoll_ctl", ROLE_EVENT_LOOPS, any(), "EventLoop::watch and its registrations' end" },
    { "eventfd2", ROLE_FILES, any(), "EventFd of a new disk engine (PATCH /drives) and of posted work" },
    { "poll", ROLE_VMM, any(),
      "bounded waits: BufferedSink and ConsoleServer flushing at exit, BlockDevice and Qcow2Engine "
      "draining in-flight requests before a drive move" },
    { "ppoll", ROLE_VMM, any(), "as poll, where glibc implements poll with ppoll" },
    { "signalfd4", ROLE_VMM, any(), "Machine::serve_events reads the stop signals" },
    { "timerfd_create", ROLE_EVENT_LOOPS, any(), "LoopTimer: rate limiters, balloon statistics, the metrics period" },
    { "timerfd_settime", ROLE_EVENT_LOOPS, any(), "LoopTimer::start and stop" },
    { "timerfd_gettime", ROLE_EVENT_LOOPS, any(), "LoopTimer's remaining time" },
    { "rt_sigpending", ROLE_VMM, any(), "the stop signals, polled while the machine is built" },
    { "rt_sigtimedwait", ROLE_FILES, any(), "the stop signals, polled while waiting for InstanceStart" },
    { "tgkill", ROLE_VMM, any(), "VcpuThread::kick (pthread_kill) for pause and stop" },
    { "clone", ROLE_VMM, flags_set(0, CLONE_THREAD),
      "VcpuThread::start from resume() of a machine restored paused: threads only, never a process" },
    { "rseq", ROLE_VMM, any(), "glibc registers a thread's restartable sequences as the thread starts" },
    { "set_robust_list", ROLE_VMM, any(), "glibc registers a thread's robust futex list as the thread starts" },
    { "prctl", ROLE_VMM, one_of(0, PR_SET_NAME, PR_SET_NO_NEW_PRIVS, 2),
      "a vCPU thread that resume() starts names itself and sets no_new_privs before its own filter" },
    { "seccomp", ROLE_VMM, one_of(0, SECCOMP_SET_MODE_FILTER),
      "that vCPU thread installs its own filter on top (a filter only ever narrows)" },
    { "clone3", ROLE_VMM, fail_with(ENOSYS),
      "glibc tries clone3 first; its flags are out of the filter's sight, so it falls back to clone" },
    { "io_uring_enter", ROLE_VMM, any(), "IoUringEngine: submissions and completions" },
    { "io_uring_setup", ROLE_VMM, any(), "PATCH /drives path_on_host: the new image's engine gets its own ring" },
    { "io_uring_register", ROLE_VMM, any(), "the new ring's file, eventfd and restrictions (restricted_ring.h)" },
    { "readv", ROLE_VMM, any(), "virtio-net: frames from the TAP" },
    { "writev", ROLE_FILES, any(), "virtio-net: frames to the TAP; spdlog" },
    { "preadv", ROLE_VMM, any(), "SyncEngine reads, qcow2 metadata" },
    { "pwritev", ROLE_VMM, any(), "SyncEngine writes" },
    { "pwritev2", ROLE_VMM, any(), "SyncEngine writes (RWF_DSYNC for cache=writethrough)" },
    { "pread64", ROLE_FILES, any(), "qcow2 metadata; snapshot state files" },
    { "fallocate", ROLE_FILES, any(), "discard and write-zeroes (SyncEngine, qcow2); snapshot memory files" },
    { "accept4", ROLE_EVENT_LOOPS, any(), "ApiServer clients; console socket and vsock host connections" },
    { "socket", ROLE_FILES, one_of(0, AF_UNIX),
      "vsock: a guest's connection to uds_path_PORT; UnixListener's probe of a stale socket" },
    { "connect", ROLE_FILES, any(), "the AF_UNIX sockets above; sock_diag's netlink socket" },
    { "getsockopt", ROLE_FILES, any(), "SO_ERROR of a non-blocking vsock connect" },
    { "setsockopt", ROLE_FILES, any(), "socket buffer sizes of accepted connections" },
    { "shutdown", ROLE_FILES, any(), "vsock stream shutdown; API clients" },
    { "recvfrom", ROLE_FILES, any(), "API clients, vsock and console connections, sock_diag replies" },
    { "sendto", ROLE_FILES, any(), "API answers, vsock and console connections, sock_diag queries" },
    { "recvmsg", ROLE_FILES, any(), "vsock and console connections, sock_diag replies" },
    { "sendmsg", ROLE_FILES, any(), "vsock and console connections, sock_diag queries" },
    { "getsockname", ROLE_FILES, any(), "sock_diag: the netlink socket's address" },

    // --- files: the features that open host files after start -----------------------------
    { "read", ROLE_FILES, any(), "eventfds, timerfds, signalfd, sockets, console input, files being loaded" },
    { "close", ROLE_FILES, any(), "every descriptor the threads above open" },
    { "openat", ROLE_FILES, any(),
      "PATCH /drives path_on_host (event loop); PUT /logger, PUT /metrics, the host checks of PUT "
      "/boot-source and /drives, PUT /snapshot/create and /snapshot/load (API and config-boot threads)" },
    { "newfstatat", ROLE_FILES, any(), "file sizes and types of the files opened above" },
    { "fstat", ROLE_FILES, any(), "file sizes and types of the files opened above" },
    { "statx", ROLE_FILES, any(), "file sizes and types of the files opened above" },
    { "lseek", ROLE_FILES, any(), "qcow2 images, snapshot files, glibc's time zone file" },
    { "fcntl", ROLE_FILES, any(), "O_NONBLOCK and FD_CLOEXEC of accepted and opened descriptors" },
    { "flock", ROLE_FILES, any(), "DiskImage's lock of a new image; snapshot files" },
    { "pwrite64", ROLE_FILES, any(), "snapshot memory and state files (GuestMemoryFile, SnapshotFile)" },
    { "fsync", ROLE_FILES, any(), "snapshot files, the metrics file, SyncEngine flush" },
    { "fdatasync", ROLE_FILES, any(), "snapshot files, SyncEngine flush (IORING_FSYNC_DATASYNC's fallback)" },
    { "ftruncate", ROLE_FILES, any(), "the snapshot memory file's length" },
    { "mincore", ROLE_CONTROL, any(), "GuestMemoryFile: only resident pages of guest RAM are written" },
    { "rename", ROLE_FILES, any(), "SnapshotFile: the finished file takes its name" },
    { "unlink", ROLE_FILES, any(), "UnixListener removes its socket; a failed snapshot's temporary file" },
    { "readlink", ROLE_FILES, any(),
      "check_storage_path's realpath(): a disk path (PUT/PATCH /drives) must not lead into /proc or /sys" },
    { "readlinkat", ROLE_FILES, any(), "as readlink, where glibc's realpath() uses the *at form" },
    { "getcwd", ROLE_FILES, any(), "realpath() of a relative disk path" },
    { "fstatfs", ROLE_FILES, any(), "check_storage_file: an opened disk must not be a file of a pseudo filesystem" },
    { "getrandom", ROLE_FILES, any(), "libstdc++ and glibc seeds (hash tables, temporary names)" },
    { "socket", ROLE_CONTROL, one_of(0, AF_NETLINK),
      "check_socket_path_unbound: netlink sock_diag (vsock uds_path at PUT /vsock)" },
};

Expected<uint64_t> ioctl_values_of(IoctlGroup group, KvmIoctls const& kvm, std::vector<uint64_t>& out) {
    auto append = [&out](std::initializer_list<uint64_t> values) { out.insert(out.end(), values); };
    switch (group) {
    case IoctlGroup::KvmVcpuRun:
        out = kvm.vcpu_run;
        break;
    case IoctlGroup::KvmVcpuDiagnostics:
        out = kvm.vcpu_diagnostics;
        break;
    case IoctlGroup::KvmInterruptLine:
        out = kvm.interrupt_line;
        break;
    case IoctlGroup::KvmDeviceWiring:
        out = kvm.device_wiring;
        break;
    case IoctlGroup::KvmSaveState:
        out = kvm.save_state;
        break;
    case IoctlGroup::KvmDirtyLog:
        out = kvm.dirty_log;
        break;
    case IoctlGroup::Terminal:
        append({ TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ });
        break;
    case IoctlGroup::BlockDevice:
        append({ BLKGETSIZE64, BLKDISCARD, BLKSSZGET });
        break;
    case IoctlGroup::Tap:
        append({ TUNSETOFFLOAD, TUNSETVNETHDRSZ });
        break;
    case IoctlGroup::SocketQueue:
        append({ FIONREAD });
        break;
    }
    return out.size();
}

} // namespace

std::span<SeccompTableRow const> seccomp_table() { return TABLE; }

Expected<SeccompRoleFilter> build_role_filter(ThreadRole role, KvmIoctls const& kvm) {
    unsigned const bit = 1u << static_cast<unsigned>(role);
    SeccompRoleFilter filter;
    filter.default_action = { SeccompAction::Kind::Trap };
    for (auto const& row : TABLE) {
        if ((row.roles & bit) == 0)
            continue;
        int const number = seccomp_syscall_resolve_name(row.syscall);
        if (number == __NR_SCMP_ERROR)
            return Error::format("seccomp table: unknown system call '{}'", row.syscall);
        auto const& condition = row.condition;
        using Kind = ArgumentCondition::Kind;
        using Operation = SeccompArgumentCheck::Operation;
        switch (condition.kind) {
        case Kind::Any:
            filter.rules.push_back({ number, { SeccompAction::Kind::Allow }, {} });
            break;
        case Kind::NoExec:
            filter.rules.push_back({ number,
                                     { SeccompAction::Kind::Allow },
                                     { { condition.index, Operation::MaskedEqual, 0, PROT_EXEC, false } } });
            break;
        case Kind::OneOf:
            for (uint8_t i = 0; i < condition.value_count; ++i)
                filter.rules.push_back({ number,
                                         { SeccompAction::Kind::Allow },
                                         { { condition.index, Operation::Equal, condition.values[i], 0, true } } });
            break;
        case Kind::FlagsSet:
            filter.rules.push_back(
                { number,
                  { SeccompAction::Kind::Allow },
                  { { condition.index, Operation::MaskedEqual, condition.values[0], condition.values[0], false } } });
            break;
        case Kind::Ioctl: {
            std::vector<uint64_t> requests;
            TRY(ioctl_values_of(condition.group, kvm, requests));
            // The kernel takes the request as an unsigned int (fs/ioctl.c): compare 32 bits.
            for (uint64_t request : requests)
                filter.rules.push_back({ number,
                                         { SeccompAction::Kind::Allow },
                                         { { 1, Operation::Equal, request & 0xFFFF'FFFFu, 0, true } } });
            break;
        }
        case Kind::FailErrno:
            filter.rules.push_back(
                { number, { SeccompAction::Kind::Errno, static_cast<uint16_t>(condition.values[0]) }, {} });
            break;
        }
    }
    return filter;
}

} // namespace kvmm

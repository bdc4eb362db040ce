#include "manager/supervisor.h"

#include "manager/crash_point.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <iterator>
#include <poll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kvmm {

namespace {

// Closes every descriptor except those in `keep` (sorted, distinct). close_range(2) where the
// kernel has it, else a loop up to `fd_limit`. Async-signal-safe.
void close_all_except(int const* keep, size_t count, int fd_limit) {
    unsigned first = 0;
    for (size_t i = 0; i <= count; ++i) {
        unsigned const end = i < count ? static_cast<unsigned>(keep[i]) : ~0U; // exclusive for the kept fd
        if (first < end) {
            unsigned const last = i < count ? end - 1 : ~0U;
            if (::close_range(first, last, 0) != 0) {
                unsigned const stop = std::min<unsigned>(last, static_cast<unsigned>(fd_limit));
                for (unsigned fd = first; fd <= stop && fd < static_cast<unsigned>(fd_limit); ++fd)
                    ::close(static_cast<int>(fd));
            }
        }
        if (i < count)
            first = static_cast<unsigned>(keep[i]) + 1;
    }
}

// The child's half: keep only its own descriptors, wait for the go-ahead, exec. Only
// async-signal-safe calls (signal-safety(7)); exec failures are reported through `report`.
//
// kvmmd is multi-threaded: at the fork this process got a copy of every descriptor the daemon
// had, including its listening socket, other VMs' sockets and the write end of our own
// go-ahead pipe. All of them are closed before the wait: if kvmmd dies before the go-ahead,
// nobody else holds the write end, the read returns end-of-file and the child exits instead
// of waiting for ever (and holding the daemon's socket, which would keep a new kvmmd out).
[[noreturn]] void exec_child(int go, int report, int null_fd, int output_fd, int fd_limit, char const* path,
                             char* const* argv) {
    // Above the standard descriptors first, so that the dup2()s below cannot overwrite them
    // (a daemon started with 0-2 closed gets them as pipe ends).
    go = ::fcntl(go, F_DUPFD_CLOEXEC, 3);
    report = ::fcntl(report, F_DUPFD_CLOEXEC, 3);
    null_fd = ::fcntl(null_fd, F_DUPFD_CLOEXEC, 3);
    output_fd = ::fcntl(output_fd, F_DUPFD_CLOEXEC, 3);
    if (go < 0 || report < 0 || null_fd < 0 || output_fd < 0 || ::dup2(null_fd, STDIN_FILENO) < 0 ||
        ::dup2(output_fd, STDOUT_FILENO) < 0 || ::dup2(output_fd, STDERR_FILENO) < 0)
        ::_exit(127);
    int keep[] = { STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO, std::min(go, report), std::max(go, report) };
    close_all_except(keep, std::size(keep), fd_limit);

    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int signal_number = 1; signal_number < NSIG; ++signal_number) {
        if (signal_number != SIGKILL && signal_number != SIGSTOP)
            signal(signal_number, SIG_DFL);
    }
    ::setsid();
    char ready = 0;
    ssize_t received;
    do
        received = ::read(go, &ready, 1);
    while (received < 0 && errno == EINTR);
    if (received != 1)
        ::_exit(127); // end-of-file: the parent gave up on us (or died); never run kvmm
    ::execv(path, argv);
    int const error_number = errno;
    (void)!::write(report, &error_number, sizeof(error_number));
    ::_exit(127);
}

} // namespace

Expected<SpawnedProcess> spawn_process(std::vector<std::string> const& argv, int output_fd, Cgroup* cgroup) {
    if (argv.empty() || argv[0].empty() || argv[0][0] != '/')
        return Error::format("program path '{}' must be absolute", argv.empty() ? "" : argv[0]);
    std::vector<char*> pointers;
    for (auto const& argument : argv)
        pointers.push_back(const_cast<char*>(argument.c_str()));
    pointers.push_back(nullptr);
    UniqueFd null_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null_fd.is_valid())
        return Error::from_errno("/dev/null");
    int go[2], report[2];
    if (::pipe2(go, O_CLOEXEC) != 0)
        return Error::from_errno("pipe2");
    UniqueFd go_read(go[0]), go_write(go[1]);
    if (::pipe2(report, O_CLOEXEC) != 0)
        return Error::from_errno("pipe2");
    UniqueFd report_read(report[0]), report_write(report[1]);

    rlimit files {};
    int const fd_limit = ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY
                             ? static_cast<int>(std::min<rlim_t>(files.rlim_cur, 1 << 20))
                             : 1 << 20;

    pid_t const pid = ::fork();
    if (pid < 0)
        return Error::from_errno("fork");
    if (pid == 0)
        exec_child(go_read.get(), report_write.get(), null_fd.get(), output_fd, fd_limit, argv[0].c_str(),
                   pointers.data());
    go_read.reset();
    report_write.reset();

    // Ends a child that must not run: it would read end-of-file on the go-ahead pipe and exit by
    // itself, but it is our child, not yet reaped, so its pid is safe to signal, and SIGKILL
    // makes the wait below independent of what the child is doing.
    auto abandon = [&](Error error) -> Expected<SpawnedProcess> {
        go_write.reset();
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        return error;
    };
    auto pidfd = open_pidfd(pid);
    if (!pidfd)
        return abandon(pidfd.error());
    if (cgroup) {
        if (auto added = cgroup->add_process(pid); !added)
            return abandon(added.error().with_context("placing kvmm in its cgroup"));
    }
    crash_point("spawn:before-go-ahead");
    char const go_ahead = 1;
    if (::write(go_write.get(), &go_ahead, 1) != 1)
        return abandon(Error::from_errno("starting the child"));
    go_write.reset();
    // The report pipe closes on a successful exec (O_CLOEXEC) or carries the exec's errno.
    int error_number = 0;
    ssize_t got;
    do
        got = ::read(report_read.get(), &error_number, sizeof(error_number));
    while (got < 0 && errno == EINTR);
    if (got == sizeof(error_number)) {
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        return Error::from_errno(fmt::format("cannot run '{}'", argv[0]), error_number);
    }
    return SpawnedProcess { pid, std::move(*pidfd) };
}

Expected<UniqueFd> open_pidfd(pid_t pid) {
    int const fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0)
        return Error::from_errno(fmt::format("pidfd_open({})", pid));
    ::fcntl(fd, F_SETFD, FD_CLOEXEC); // pidfds are close-on-exec already; make it explicit
    return UniqueFd(fd);
}

Expected<void> send_signal(int pidfd, int signal_number) {
    if (::syscall(SYS_pidfd_send_signal, pidfd, signal_number, nullptr, 0) != 0 && errno != ESRCH)
        return Error::from_errno(fmt::format("pidfd_send_signal({})", signal_number));
    return {};
}

bool wait_readable(int fd, std::chrono::milliseconds timeout) {
    auto const deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        auto const left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd entry { fd, POLLIN, 0 };
        int const ready = ::poll(&entry, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
        if (ready > 0)
            return true;
        if (ready == 0 || errno != EINTR)
            return false;
    }
}

std::string ExitStatus::describe() const {
    if (signal != 0)
        return fmt::format("killed by signal {} ({})", signal, strsignal(signal));
    return fmt::format("exited with status {}", code);
}

std::optional<ExitStatus> reap_child(pid_t pid) {
    int status = 0;
    pid_t reaped;
    do
        reaped = ::waitpid(pid, &status, WNOHANG);
    while (reaped < 0 && errno == EINTR);
    if (reaped != pid)
        return std::nullopt;
    if (WIFSIGNALED(status))
        return ExitStatus { 0, WTERMSIG(status) };
    return ExitStatus { WEXITSTATUS(status), 0 };
}

bool RestartLimiter::allow(Clock::time_point now) {
    while (!m_restarts.empty() && now - m_restarts.front() >= m_window)
        m_restarts.pop_front();
    if (m_restarts.size() >= m_max_restarts)
        return false;
    m_restarts.push_back(now);
    return true;
}

} // namespace kvmm

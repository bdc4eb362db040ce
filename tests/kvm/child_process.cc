#include "child_process.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kvmm::testing {

namespace {

void close_both(int pipe_fds[2]) {
    if (pipe_fds[0] >= 0)
        ::close(pipe_fds[0]);
    if (pipe_fds[1] >= 0)
        ::close(pipe_fds[1]);
}

} // namespace

pid_t spawn_process(std::vector<std::string> const& arguments, int input, int output, int error) {
    pid_t const pid = ::fork();
    if (pid == 0) {
        ::dup2(input, STDIN_FILENO);
        ::dup2(output, STDOUT_FILENO);
        ::dup2(error, STDERR_FILENO);
        std::vector<char*> argv;
        for (auto const& argument : arguments)
            argv.push_back(const_cast<char*>(argument.c_str()));
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    return pid;
}

ProcessResult run_process(std::vector<std::string> const& arguments, std::string const& input,
                          std::chrono::milliseconds limit) {
    ProcessResult result;
    int input_pipe[2] = { -1, -1 }, output_pipe[2] = { -1, -1 }, error_pipe[2] = { -1, -1 };
    if (::pipe2(input_pipe, O_CLOEXEC) != 0 || ::pipe2(output_pipe, O_CLOEXEC) != 0 ||
        ::pipe2(error_pipe, O_CLOEXEC) != 0) {
        result.standard_error = "pipe2 failed";
        return result;
    }
    auto const start = std::chrono::steady_clock::now();
    pid_t const pid = spawn_process(arguments, input_pipe[0], output_pipe[1], error_pipe[1]);
    ::close(input_pipe[0]);
    ::close(output_pipe[1]);
    ::close(error_pipe[1]);
    input_pipe[0] = output_pipe[1] = error_pipe[1] = -1;

    size_t written = 0;
    if (input.empty()) {
        ::close(input_pipe[1]);
        input_pipe[1] = -1;
    }
    ::signal(SIGPIPE, SIG_IGN);
    bool output_open = true, error_open = true;
    while (output_open || error_open) {
        auto const remaining =
            limit - std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
        if (remaining.count() <= 0) {
            result.timed_out = true;
            ::kill(pid, SIGKILL);
            break;
        }
        pollfd fds[3] = { { output_open ? output_pipe[0] : -1, POLLIN, 0 },
                          { error_open ? error_pipe[0] : -1, POLLIN, 0 },
                          { input_pipe[1], POLLOUT, 0 } };
        if (::poll(fds, 3, static_cast<int>(std::min<long>(remaining.count(), 100))) < 0 && errno != EINTR)
            break;
        char buffer[4096];
        if (fds[0].revents) {
            ssize_t got = ::read(output_pipe[0], buffer, sizeof(buffer));
            if (got > 0)
                result.standard_output.append(buffer, static_cast<size_t>(got));
            else
                output_open = false;
        }
        if (fds[1].revents) {
            ssize_t got = ::read(error_pipe[0], buffer, sizeof(buffer));
            if (got > 0)
                result.standard_error.append(buffer, static_cast<size_t>(got));
            else
                error_open = false;
        }
        if (input_pipe[1] >= 0 && fds[2].revents) {
            ssize_t put = ::write(input_pipe[1], input.data() + written, input.size() - written);
            if (put > 0)
                written += static_cast<size_t>(put);
            if (put <= 0 || written == input.size()) {
                ::close(input_pipe[1]);
                input_pipe[1] = -1;
            }
        }
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    result.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    if (WIFEXITED(status))
        result.exit_status = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        result.signal = WTERMSIG(status);
    close_both(input_pipe);
    close_both(output_pipe);
    close_both(error_pipe);
    return result;
}

std::string kvmm_binary() { return KVMM_BINARY; }
std::string test_guest() { return KVMM_TEST_GUEST; }

std::string kvm_unavailable_reason() {
    int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return std::string("/dev/kvm cannot be opened: ") + std::strerror(errno);
    ::close(fd);
    return {};
}

} // namespace kvmm::testing

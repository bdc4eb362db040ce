#include "jailed_process.h"

#include "child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace kvmm::testing {

JailedProcess::JailedProcess(std::vector<std::string> const& arguments) {
    int input[2], output[2], error[2];
    if (::pipe2(input, O_CLOEXEC) != 0 || ::pipe2(output, O_CLOEXEC) != 0 || ::pipe2(error, O_CLOEXEC) != 0)
        return;
    ::signal(SIGPIPE, SIG_IGN);
    m_pid = spawn_process(arguments, input[0], output[1], error[1]);
    ::close(input[0]);
    ::close(output[1]);
    ::close(error[1]);
    m_input = input[1];
    m_stdout = output[0];
    m_stderr = error[0];
    ::fcntl(m_stdout, F_SETFL, O_NONBLOCK);
    ::fcntl(m_stderr, F_SETFL, O_NONBLOCK);
}

JailedProcess::~JailedProcess() {
    if (m_pid > 0 && !m_exited) {
        ::kill(m_pid, SIGKILL);
        ::waitpid(m_pid, nullptr, 0);
    }
    for (int fd : { m_input, m_stdout, m_stderr })
        if (fd >= 0)
            ::close(fd);
}

void JailedProcess::drain(int fd, std::string& into) {
    char buffer[4096];
    ssize_t got = 0;
    while ((got = ::read(fd, buffer, sizeof(buffer))) > 0)
        into.append(buffer, static_cast<size_t>(got));
}

std::map<std::string, std::string> JailedProcess::read_report(std::chrono::milliseconds limit) {
    auto const deadline = std::chrono::steady_clock::now() + limit;
    while (m_output.find("report=done\n") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
        pollfd fds[2] = { { m_stdout, POLLIN, 0 }, { m_stderr, POLLIN, 0 } };
        if (::poll(fds, 2, 100) < 0)
            break;
        drain(m_stdout, m_output);
        drain(m_stderr, m_error);
        if ((fds[0].revents & POLLHUP) && !(fds[0].revents & POLLIN))
            break;
    }
    std::map<std::string, std::string> pairs;
    std::istringstream lines(m_output);
    std::string line;
    while (std::getline(lines, line))
        if (auto const equals = line.find('='); equals != std::string::npos)
            pairs[line.substr(0, equals)] = line.substr(equals + 1);
    return pairs;
}

int JailedProcess::finish(std::chrono::milliseconds limit) {
    if (m_input >= 0) {
        ::close(m_input);
        m_input = -1;
    }
    auto const deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (true) {
        drain(m_stdout, m_output);
        drain(m_stderr, m_error);
        auto const waited = ::waitpid(m_pid, &status, WNOHANG);
        if (waited == m_pid)
            break;
        if (waited < 0 || std::chrono::steady_clock::now() > deadline) {
            ::kill(m_pid, SIGKILL);
            ::waitpid(m_pid, &status, 0);
            m_exited = true;
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    m_exited = true;
    // What the process wrote last (a daemonized child may keep the pipes; do not wait for EOF).
    drain(m_stdout, m_output);
    drain(m_stderr, m_error);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_whole_file(std::string const& path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

std::string proc_status_field(pid_t pid, std::string const& key) {
    std::istringstream lines(read_whole_file("/proc/" + std::to_string(pid) + "/status"));
    std::string line;
    while (std::getline(lines, line))
        if (line.rfind(key + ":", 0) == 0) {
            auto value = line.substr(key.size() + 1);
            while (!value.empty() && (value.front() == '\t' || value.front() == ' '))
                value.erase(0, 1);
            return value;
        }
    return {};
}

} // namespace kvmm::testing

#include "kvmm_process.h"

#include "child_process.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace kvmm::testing {

using namespace std::chrono_literals;

HttpAnswer http(std::string const& socket_path, std::string const& method, std::string const& path,
                std::string const& body, std::chrono::seconds timeout) {
    auto const start = std::chrono::steady_clock::now();
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address {};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", socket_path.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
        ::close(fd);
        return {};
    }
    timeval const limit { timeout.count(), 0 };
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
    std::string request = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
    if (!body.empty() || method == "PUT" || method == "PATCH")
        request += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    request += "\r\n" + body;
    (void)!::write(fd, request.data(), request.size());
    std::string response;
    char buffer[4096];
    while (true) {
        ssize_t const got = ::read(fd, buffer, sizeof(buffer));
        if (got <= 0)
            break;
        response.append(buffer, static_cast<size_t>(got));
    }
    ::close(fd);
    HttpAnswer answer;
    answer.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
    if (response.rfind("HTTP/1.1 ", 0) == 0)
        answer.status = std::atoi(response.c_str() + 9);
    auto const header_end = response.find("\r\n\r\n");
    if (header_end != std::string::npos)
        answer.body = response.substr(header_end + 4);
    return answer;
}

std::string read_text(std::filesystem::path const& path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

bool eventually(std::function<bool()> const& condition, std::chrono::milliseconds limit) {
    auto const deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition())
            return true;
        std::this_thread::sleep_for(20ms);
    }
    return condition();
}

KvmmProcess::KvmmProcess(std::vector<std::string> const& arguments, std::filesystem::path const& directory)
    : m_stdout(directory / "stdout"), m_stderr(directory / "stderr") {
    int const input = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    int const output = ::open(m_stdout.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int const error = ::open(m_stderr.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    m_pid = spawn_process(arguments, input, output, error);
    for (int fd : { input, output, error })
        ::close(fd);
}

KvmmProcess::~KvmmProcess() {
    if (m_pid > 0 && !m_exited) {
        ::kill(m_pid, SIGKILL); // our own child, by its pid
        ::waitpid(m_pid, nullptr, 0);
    }
}

int KvmmProcess::wait(std::chrono::milliseconds limit) {
    int status = 0;
    if (!eventually([&] { return ::waitpid(m_pid, &status, WNOHANG) == m_pid; }, limit))
        return -1;
    m_exited = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::map<std::string, ThreadConfinement> thread_confinement(pid_t pid) {
    std::map<std::string, ThreadConfinement> threads;
    std::error_code ignored;
    for (auto const& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ignored)) {
        std::ifstream status(task.path() / "status");
        std::string line, name;
        ThreadConfinement confinement;
        while (std::getline(status, line)) {
            if (line.rfind("Name:\t", 0) == 0)
                name = line.substr(6);
            else if (line.rfind("Seccomp:\t", 0) == 0)
                confinement.seccomp = line.substr(9);
            else if (line.rfind("NoNewPrivs:\t", 0) == 0)
                confinement.no_new_privs = line.substr(12);
            else if (line.rfind("CapEff:\t", 0) == 0)
                confinement.cap_effective = line.substr(8);
        }
        if (!name.empty() && name.rfind("kvm-", 0) != 0)
            threads[name] = confinement;
    }
    return threads;
}

uint64_t peak_rss_kib(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmHWM:", 0) == 0)
            return std::strtoull(line.c_str() + 6, nullptr, 10);
    return 0;
}

} // namespace kvmm::testing

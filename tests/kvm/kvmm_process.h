// Test support for the KVM tier: kvmm as a background child process, and a minimal HTTP
// client for its API socket. Used by the API tests and the hostile-guest suite.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <sys/types.h>
#include <vector>

namespace kvmm::testing {

struct HttpAnswer {
    int status { 0 }; // 0: no answer within the timeout (or no connection)
    std::string body;
    std::chrono::microseconds elapsed { 0 }; // from connect to the end of the answer
};

// One request on a fresh connection (Connection: close), answer read to the end. A kvmm that
// does not answer within `timeout` fails the caller's check instead of hanging the test.
HttpAnswer http(std::string const& socket_path, std::string const& method, std::string const& path,
                std::string const& body = {}, std::chrono::seconds timeout = std::chrono::seconds(10));

std::string read_text(std::filesystem::path const& path);

// Polls `condition` every 20 ms until it holds or `limit` passes; returns its last value.
bool eventually(std::function<bool()> const& condition, std::chrono::milliseconds limit = std::chrono::seconds(10));

// Peak resident set size (VmHWM) of a process in KiB, or 0 when it is gone.
uint64_t peak_rss_kib(pid_t pid);

// What /proc/PID/task/*/status says about one thread's confinement.
struct ThreadConfinement {
    std::string seccomp;       // "Seccomp:" 0 none, 2 filter
    std::string no_new_privs;  // "NoNewPrivs:"
    std::string cap_effective; // "CapEff:", hexadecimal
};

// Every thread of `pid` by name. KVM's own kernel workers in the process
// (kvm-nx-lpage-recovery) are not kvmm threads and are left out.
std::map<std::string, ThreadConfinement> thread_confinement(pid_t pid);

// kvmm as a background process with its console and log in files under `directory`. The
// destructor kills it (by its own pid) if it is still running.
class KvmmProcess {
public:
    KvmmProcess(std::vector<std::string> const& arguments, std::filesystem::path const& directory);
    ~KvmmProcess();
    KvmmProcess(KvmmProcess const&) = delete;
    KvmmProcess& operator=(KvmmProcess const&) = delete;

    // Waits up to `limit` for the process to end; its exit status (128 + signal), or -1.
    int wait(std::chrono::milliseconds limit);
    std::string output() const { return read_text(m_stdout); }
    std::string log() const { return read_text(m_stderr); }
    pid_t pid() const { return m_pid; }
    // Peak resident set size (VmHWM) in KiB, or 0 when the process is gone.
    uint64_t peak_rss_kib() const { return testing::peak_rss_kib(m_pid); }

private:
    std::filesystem::path m_stdout;
    std::filesystem::path m_stderr;
    pid_t m_pid { -1 };
    bool m_exited { false };
};

} // namespace kvmm::testing

// JailedProcess: runs kvmm-jailer with piped stdio, reads jail_probe's "key=value" report, and
// lets the test look at the jailed process through /proc/PID before it ends. The process is
// ended (by its own pid) if it outlives the test's limit.
//
// Threading: one test thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace kvmm::testing {

class JailedProcess {
public:
    explicit JailedProcess(std::vector<std::string> const& arguments);
    ~JailedProcess();
    JailedProcess(JailedProcess const&) = delete;
    JailedProcess& operator=(JailedProcess const&) = delete;

    pid_t pid() const { return m_pid; }
    // Reads stdout until "report=done" (or EOF, or the limit); the pairs it read.
    std::map<std::string, std::string> read_report(std::chrono::milliseconds limit = std::chrono::seconds(20));
    // Closes the probe's stdin and waits for the exit; the exit status, or -1 (signal, timeout).
    int finish(std::chrono::milliseconds limit = std::chrono::seconds(20));
    std::string const& standard_output() const { return m_output; }
    std::string const& standard_error() const { return m_error; }

private:
    void drain(int fd, std::string& into);
    pid_t m_pid { -1 };
    int m_input { -1 };
    int m_stdout { -1 };
    int m_stderr { -1 };
    bool m_exited { false };
    std::string m_output;
    std::string m_error;
};

// Host path of a /proc/PID file's "Key:\tvalue" line's value, or empty.
std::string proc_status_field(pid_t pid, std::string const& key);
std::string read_whole_file(std::string const& path);

} // namespace kvmm::testing

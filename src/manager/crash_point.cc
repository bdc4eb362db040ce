#include "manager/crash_point.h"

#include <csignal>
#include <cstdlib>
#include <string>
#include <unistd.h>

namespace kvmm {

void crash_point(std::string_view step) {
    static std::string const configured = [] {
        char const* value = std::getenv(CRASH_AT_VARIABLE);
        return std::string(value ? value : "");
    }();
    if (configured.empty() || configured != step)
        return;
    std::string const message =
        "kvmmd: test hook " + std::string(CRASH_AT_VARIABLE) + ": SIGKILL at " + std::string(step) + "\n";
    (void)!::write(STDERR_FILENO, message.data(), message.size());
    ::kill(::getpid(), SIGKILL);
    while (true)
        ::pause(); // SIGKILL cannot be caught: the process ends here
}

} // namespace kvmm

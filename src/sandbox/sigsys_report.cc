#include "sandbox/sigsys_report.h"

#include <seccomp.h>

#include <array>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <unistd.h>

namespace kvmm {

namespace {

// Syscall numbers the report names (x86-64 numbers stay below 512); others are shown as a
// number only.
constexpr int NAMED_SYSCALLS = 512;
constexpr size_t NAME_SIZE = 24;
std::array<std::array<char, NAME_SIZE>, NAMED_SYSCALLS> g_syscall_names {};

// The calling thread's identity, read by the handler (initial-exec TLS: no allocation, no
// lock, safe in a signal handler).
thread_local char t_thread_name[16] = "kvmm";
thread_local char t_role_name[16] = "unfiltered";

// Appends `text` to the buffer at `used`, bounded.
void append(char* buffer, size_t size, size_t& used, char const* text) {
    while (*text != '\0' && used + 1 < size)
        buffer[used++] = *text++;
}

void append_number(char* buffer, size_t size, size_t& used, long value) {
    char digits[24];
    size_t count = 0;
    bool const negative = value < 0;
    unsigned long magnitude = negative ? 0UL - static_cast<unsigned long>(value) : static_cast<unsigned long>(value);
    do {
        digits[count++] = static_cast<char>('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude != 0 && count < sizeof(digits));
    if (negative)
        append(buffer, size, used, "-");
    while (count > 0 && used + 1 < size)
        buffer[used++] = digits[--count];
}

void on_sigsys(int, siginfo_t* info, void*) {
    char line[256];
    size_t used = 0;
    int const number = info->si_syscall;
    append(line, sizeof(line), used, "kvmm: seccomp: thread '");
    append(line, sizeof(line), used, t_thread_name);
    append(line, sizeof(line), used, "' (role ");
    append(line, sizeof(line), used, t_role_name);
    append(line, sizeof(line), used, ") made forbidden system call ");
    append_number(line, sizeof(line), used, number);
    if (number >= 0 && number < NAMED_SYSCALLS && g_syscall_names[static_cast<size_t>(number)][0] != '\0') {
        append(line, sizeof(line), used, " (");
        append(line, sizeof(line), used, g_syscall_names[static_cast<size_t>(number)].data());
        append(line, sizeof(line), used, ")");
    }
    append(line, sizeof(line), used, "; exiting with status ");
    append_number(line, sizeof(line), used, SECCOMP_VIOLATION_EXIT_STATUS);
    append(line, sizeof(line), used, "\n");
    ssize_t const ignored = ::write(STDERR_FILENO, line, used);
    (void)ignored;
    ::_exit(SECCOMP_VIOLATION_EXIT_STATUS);
}

void copy_bounded(char* target, size_t size, std::string_view text) {
    size_t const count = std::min(size - 1, text.size());
    std::memcpy(target, text.data(), count);
    target[count] = '\0';
}

} // namespace

void prepare_sigsys_report() {
    for (int number = 0; number < NAMED_SYSCALLS; ++number) {
        char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, number);
        if (name != nullptr) {
            copy_bounded(g_syscall_names[static_cast<size_t>(number)].data(), NAME_SIZE, name);
            ::free(name);
        }
    }
    // glibc reads /etc/localtime on the first localtime_r; do it now, before any filter.
    ::tzset();
    struct sigaction action {};
    action.sa_sigaction = on_sigsys;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_SIGINFO;
    ::sigaction(SIGSYS, &action, nullptr);
}

void set_thread_role_for_report(ThreadRole role, std::string_view thread_name) {
    copy_bounded(t_thread_name, sizeof(t_thread_name), thread_name);
    copy_bounded(t_role_name, sizeof(t_role_name), thread_role_name(role));
}

} // namespace kvmm

// kvmm-crash-check: builds the disk images a power loss could leave from a drive's starting
// contents and its write recording (--disk ...,record=LOG), and checks each one: the built-in
// records check and, optionally, a command (e.g. e2fsck). The model and the checks are in
// backends/disk/crash_states.h and docs/crash_states.md.
//
// Exit status: 0 every state passed, 1 some state failed, 2 bad input or a failed run.
#include "backends/disk/crash_states.h"

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

// Runs `/bin/sh -c COMMAND kvmm-crash-check IMAGE` (the command names the image "$1"); its
// output is kept (the last part) for the failure message.
kvmm::Expected<void> run_check_command(std::string const& command, std::string const& image) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
        return kvmm::Error::from_errno("creating a pipe for the check command");
    pid_t const child = ::fork();
    if (child < 0) {
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
        return kvmm::Error::from_errno("fork for the check command");
    }
    if (child == 0) {
        ::dup2(pipe_fds[1], STDOUT_FILENO);
        ::dup2(pipe_fds[1], STDERR_FILENO);
        ::execl("/bin/sh", "sh", "-c", command.c_str(), "kvmm-crash-check", image.c_str(), nullptr);
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    std::string output;
    char buffer[4096];
    while (true) {
        ssize_t const got = ::read(pipe_fds[0], buffer, sizeof(buffer));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        output.append(buffer, static_cast<size_t>(got));
        if (output.size() > 4000)
            output.erase(0, output.size() - 2000);
    }
    ::close(pipe_fds[0]);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0)
        if (errno != EINTR)
            return kvmm::Error::from_errno("waiting for the check command");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return {};
    while (!output.empty() && output.back() == '\n')
        output.pop_back();
    return kvmm::Error::format("check command {} with output: {}",
                               WIFEXITED(status) ? fmt::format("exited with {}", WEXITSTATUS(status))
                                                 : fmt::format("was killed by signal {}", WTERMSIG(status)),
                               output.size() > 1000 ? "..." + output.substr(output.size() - 1000) : output);
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app { "kvmm-crash-check - check the disk images a power loss could leave, from a write recording",
                   "kvmm-crash-check" };
    std::string base, log_path, command, work_directory = "/tmp";
    uint64_t seed = 1;
    unsigned samples = 8;
    bool no_records = false;
    size_t shown = 20;
    app.add_option("--base", base, "The raw image the recording started from (not changed)")->required();
    app.add_option("--log", log_path, "The recording (--disk ...,record=LOG)")->required();
    app.add_option("--seed", seed, "Seed of the sampled states (a run is reproducible from it)")->default_val(1);
    app.add_option("--samples-per-interval", samples, "Sampled states between consecutive flush points")
        ->default_val(8);
    app.add_option("--check-command", command,
                   "Shell command run on a scratch copy of each state's image, named \"$1\"; it may change the "
                   "copy; a non-zero exit fails the state (e.g. 'e2fsck -fy \"$1\" >/dev/null; e2fsck -fn \"$1\"')");
    app.add_flag("--no-records", no_records, "Skip the built-in records check");
    app.add_option("--work-dir", work_directory, "Where the working image and scratch copies go")->default_val("/tmp");
    app.add_option("--show-failures", shown, "How many failed states to describe")->default_val(20);
    CLI11_PARSE(app, argc, argv);

    // The recording is mapped, not read: it holds every write's data.
    int const fd = ::open(log_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        std::fprintf(stderr, "kvmm-crash-check: opening %s: %s\n", log_path.c_str(), std::strerror(errno));
        return 2;
    }
    struct stat status {};
    if (::fstat(fd, &status) != 0 || status.st_size == 0) {
        std::fprintf(stderr, "kvmm-crash-check: %s is empty or unreadable\n", log_path.c_str());
        ::close(fd);
        return 2;
    }
    auto const size = static_cast<size_t>(status.st_size);
    void* const mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (mapped == MAP_FAILED) {
        std::fprintf(stderr, "kvmm-crash-check: mapping %s: %s\n", log_path.c_str(), std::strerror(errno));
        return 2;
    }
    auto const log = kvmm::parse_write_log(std::span(static_cast<std::byte const*>(mapped), size));
    if (!log) {
        std::fprintf(stderr, "kvmm-crash-check: %s: %s\n", log_path.c_str(), log.error().message().c_str());
        return 2;
    }
    if (log->trailing_bytes != 0)
        std::fprintf(stderr, "kvmm-crash-check: %s ends in %llu bytes of a cut-off record; they are ignored\n",
                     log_path.c_str(), static_cast<unsigned long long>(log->trailing_bytes));

    kvmm::CrashCheckOptions options;
    options.seed = seed;
    options.samples_per_interval = samples;
    options.check_records = !no_records;
    options.work_directory = work_directory;
    if (!command.empty())
        options.check_image = [&command](std::string const& image) { return run_check_command(command, image); };
    auto const report = kvmm::check_crash_states(base, *log, options);
    if (!report) {
        std::fprintf(stderr, "kvmm-crash-check: %s\n", report.error().message().c_str());
        return 2;
    }
    for (size_t i = 0; i < report->failures.size() && i < shown; ++i)
        std::printf("FAILED %s\n  %s\n", kvmm::describe_crash_state(report->failures[i].state).c_str(),
                    report->failures[i].reason.c_str());
    std::printf("%llu crash states checked (%llu records, %llu flush points, seed %llu): %zu failed\n",
                static_cast<unsigned long long>(report->states_checked),
                static_cast<unsigned long long>(report->records), static_cast<unsigned long long>(report->flush_points),
                static_cast<unsigned long long>(seed), report->failures.size());
    return report->failures.empty() ? 0 : 1;
}

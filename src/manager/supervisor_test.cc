#include "manager/supervisor.h"

#include <gtest/gtest.h>

#include <csignal>
#include <fcntl.h>
#include <unistd.h>

namespace kvmm {
namespace {

ExitStatus run_to_exit(std::vector<std::string> const& argv) {
    UniqueFd output(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    auto process = MUST(spawn_process(argv, output.get(), nullptr));
    EXPECT_TRUE(wait_readable(process.pidfd.get(), std::chrono::seconds(10)));
    std::optional<ExitStatus> status;
    for (int i = 0; i < 1000 && !status; ++i) {
        status = reap_child(process.pid);
        if (!status)
            usleep(1000);
    }
    EXPECT_TRUE(status);
    return status.value_or(ExitStatus { -1, 0 });
}

TEST(SupervisorTest, SpawnProcess_ReportsExitCodeAndSignal) {
    auto ok = run_to_exit({ "/bin/sh", "-c", "exit 0" });
    EXPECT_TRUE(ok.success());
    auto failed = run_to_exit({ "/bin/sh", "-c", "exit 3" });
    EXPECT_EQ(failed.code, 3);
    EXPECT_EQ(failed.describe(), "exited with status 3");
    auto killed = run_to_exit({ "/bin/sh", "-c", "kill -9 $$" });
    EXPECT_EQ(killed.signal, SIGKILL);
    EXPECT_FALSE(killed.success());
}

TEST(SupervisorTest, SpawnProcess_MissingProgramIsAnError) {
    UniqueFd output(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    auto spawned = spawn_process({ "/nonexistent/kvmm" }, output.get(), nullptr);
    ASSERT_FALSE(spawned);
    EXPECT_NE(spawned.error().message().find("/nonexistent/kvmm"), std::string::npos);
    EXPECT_FALSE(spawn_process({ "relative/path" }, output.get(), nullptr));
}

TEST(SupervisorTest, SendSignal_StopsThatProcess) {
    UniqueFd output(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    auto process = MUST(spawn_process({ "/bin/sleep", "30" }, output.get(), nullptr));
    EXPECT_FALSE(wait_readable(process.pidfd.get(), std::chrono::milliseconds(50)));
    MUST(send_signal(process.pidfd.get(), SIGTERM));
    EXPECT_TRUE(wait_readable(process.pidfd.get(), std::chrono::seconds(10)));
    std::optional<ExitStatus> status;
    for (int i = 0; i < 1000 && !status; ++i) {
        status = reap_child(process.pid);
        if (!status)
            usleep(1000);
    }
    ASSERT_TRUE(status);
    EXPECT_EQ(status->signal, SIGTERM);
}

TEST(RestartLimiterTest, AllowsAtMostMaxWithinTheWindow) {
    RestartLimiter limiter(2, std::chrono::seconds(60));
    auto const start = RestartLimiter::Clock::now();
    EXPECT_TRUE(limiter.allow(start));
    EXPECT_TRUE(limiter.allow(start + std::chrono::seconds(1)));
    EXPECT_FALSE(limiter.allow(start + std::chrono::seconds(2)));
    EXPECT_TRUE(limiter.allow(start + std::chrono::seconds(61)));
}

} // namespace
} // namespace kvmm

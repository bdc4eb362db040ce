#include "manager/supervisor.h"

#include <gtest/gtest.h>

#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <future>
#include <memory>
#include <thread>
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

TEST(SupervisorTest, SpawnProcess_ChildInheritsNoDescriptorOfTheParent) {
    // Descriptors without close-on-exec, as a careless library might create: the child must not
    // get them (it closes everything it does not own right after the fork).
    int leaked[2];
    ASSERT_EQ(::pipe(leaked), 0);
    UniqueFd leaked_read(leaked[0]), leaked_write(leaked[1]);
    std::string const check =
        fmt::format("for fd in {} {}; do [ -e /proc/$$/fd/$fd ] && exit 1; done; exit 0", leaked[0], leaked[1]);
    auto status = run_to_exit({ "/bin/sh", "-c", check });
    EXPECT_TRUE(status.success()) << status.describe();
}

TEST(SupervisorTest, SpawnProcess_CgroupFailure_EndsTheChildAndReturns) {
    // A cgroup whose cgroup.procs cannot be written (a directory here): the child must not be
    // left waiting for a go-ahead, and spawn_process must not wait for it for ever.
    char pattern[] = "/tmp/supervisor-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    std::filesystem::path const root = pattern;
    std::filesystem::create_directories(root / "parent" / "vm" / "cgroup.procs");
    CgroupHierarchies hierarchies;
    hierarchies.version = CgroupHierarchies::Version::V2;
    hierarchies.unified = root;
    auto cgroup = MUST(Cgroup::open_existing(hierarchies, "parent", "vm"));
    auto result = std::make_shared<std::promise<bool>>();
    auto finished = result->get_future();
    std::thread([result, cgroup]() mutable {
        UniqueFd output(::open("/dev/null", O_WRONLY | O_CLOEXEC));
        result->set_value(!spawn_process({ "/bin/sleep", "30" }, output.get(), &cgroup));
    }).detach();
    ASSERT_EQ(finished.wait_for(std::chrono::seconds(10)), std::future_status::ready)
        << "spawn_process still waits for a child that cannot be started";
    EXPECT_TRUE(finished.get()) << "spawn_process succeeded without a cgroup";
    std::filesystem::remove_all(root);
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

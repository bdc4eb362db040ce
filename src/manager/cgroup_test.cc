#include "manager/cgroup.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

namespace kvmm {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string read_text(fs::path const& path) {
    std::ifstream stream(path);
    std::stringstream contents;
    contents << stream.rdbuf();
    return contents.str();
}

// Runs each test in its own parent cgroup, removed afterwards; skips where this host's cgroup
// file system cannot be written (not root, read-only mount, container without delegation).
class RealCgroup : public ::testing::Test {
protected:
    void SetUp() override {
        auto hierarchies = CgroupHierarchies::detect();
        if (!hierarchies)
            GTEST_SKIP() << "no cgroup file system: " << hierarchies.error().message();
        m_hierarchies = *hierarchies;
        m_parent = "kvmm-test-" + std::to_string(::getpid()) + "-" +
                   ::testing::UnitTest::GetInstance()->current_test_info()->name();
        auto probe = Cgroup::create(m_hierarchies, m_parent, "probe", {});
        if (!probe)
            GTEST_SKIP() << "cgroup file system not writable: " << probe.error().message();
        ASSERT_TRUE(probe->destroy());
    }

    void TearDown() override {
        for (auto const& root : roots()) {
            std::error_code ignored;
            fs::remove(root / m_parent, ignored); // rmdir; the cgroups inside are gone by now
        }
    }

    std::vector<fs::path> roots() const {
        if (m_hierarchies.version == CgroupHierarchies::Version::V2)
            return { m_hierarchies.unified };
        return { m_hierarchies.cpu, m_hierarchies.cpuacct, m_hierarchies.memory };
    }

    CgroupHierarchies m_hierarchies;
    std::string m_parent;
};

TEST_F(RealCgroup, Create_WritesLimitsThatReadBack) {
    CgroupLimits const limits { 250, 150, 64ull << 20 };
    auto cgroup = Cgroup::create(m_hierarchies, m_parent, "vm", limits);
    ASSERT_TRUE(cgroup) << cgroup.error().message();
    for (auto const& path : cgroup->paths())
        EXPECT_TRUE(fs::is_directory(path)) << path;
    EXPECT_EQ(MUST(cgroup->limits()), limits);
    // The raw files, as the kernel documents them.
    if (cgroup->version() == CgroupHierarchies::Version::V2) {
        auto const& directory = cgroup->paths().front();
        EXPECT_EQ(read_text(directory / "cpu.weight"), "250\n");
        EXPECT_EQ(read_text(directory / "cpu.max"), "150000 100000\n");
        EXPECT_EQ(read_text(directory / "memory.max"), std::to_string(64ull << 20) + "\n");
    } else {
        auto const cpu = m_hierarchies.cpu / m_parent / "vm";
        EXPECT_EQ(read_text(cpu / "cpu.shares"), std::to_string(250 * 1024 / 100) + "\n");
        EXPECT_EQ(read_text(cpu / "cpu.cfs_quota_us"), "150000\n");
        EXPECT_EQ(read_text(cpu / "cpu.cfs_period_us"), "100000\n");
        EXPECT_EQ(read_text(m_hierarchies.memory / m_parent / "vm" / "memory.limit_in_bytes"),
                  std::to_string(64ull << 20) + "\n");
    }
    ASSERT_TRUE(cgroup->destroy());
    for (auto const& path : cgroup->paths())
        EXPECT_FALSE(fs::exists(path)) << path;
}

TEST_F(RealCgroup, SetLimits_NulloptResetsToUnlimited) {
    auto cgroup = MUST(Cgroup::create(m_hierarchies, m_parent, "vm", { 300, 50, 32ull << 20 }));
    ASSERT_TRUE(cgroup.set_limits({}));
    EXPECT_EQ(MUST(cgroup.limits()), CgroupLimits {});
    ASSERT_TRUE(cgroup.destroy());
}

TEST_F(RealCgroup, InvalidLimits_AreRejected) {
    auto cgroup = MUST(Cgroup::create(m_hierarchies, m_parent, "vm", {}));
    EXPECT_FALSE(cgroup.set_limits({ 0, std::nullopt, std::nullopt }));
    EXPECT_FALSE(cgroup.set_limits({ 10001, std::nullopt, std::nullopt }));
    EXPECT_FALSE(cgroup.set_limits({ std::nullopt, 0, std::nullopt }));
    ASSERT_TRUE(cgroup.destroy());
}

TEST_F(RealCgroup, AddedChild_IsListedAndItsUsageCounted) {
    auto cgroup = MUST(Cgroup::create(m_hierarchies, m_parent, "vm", { std::nullopt, std::nullopt, 256ull << 20 }));
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    pid_t const child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // Wait until moved, then burn CPU and touch memory until killed.
        char byte = 0;
        if (::read(ready[0], &byte, 1) != 1)
            ::_exit(1);
        std::vector<char> memory(8 << 20, 1);
        volatile uint64_t counter = 0;
        while (true) {
            for (size_t i = 0; i < memory.size(); i += 4096)
                counter = counter + static_cast<uint64_t>(memory[i]++);
        }
    }
    ::close(ready[0]);
    auto const added = cgroup.add_process(child);
    char const go = 'g';
    EXPECT_EQ(::write(ready[1], &go, 1), 1);
    ::close(ready[1]);
    if (!added) {
        ::kill(child, SIGKILL);
        ::waitpid(child, nullptr, 0);
        FAIL() << added.error().message();
    }
    EXPECT_THAT(MUST(cgroup.processes()), ::testing::ElementsAre(child));

    // Usage grows while the child runs: at least 20 ms of CPU and its 8 MiB of memory.
    CgroupUsage usage {};
    auto const deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        usage = MUST(cgroup.usage());
        if (usage.cpu_usage_ns >= 20'000'000 && usage.memory_bytes >= (8u << 20))
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_GE(usage.cpu_usage_ns, 20'000'000u);
    EXPECT_GE(usage.memory_bytes, 8u << 20);

    auto const busy = cgroup.destroy();
    EXPECT_FALSE(busy); // a cgroup with a process in it cannot be removed
    ::kill(child, SIGKILL);
    ASSERT_EQ(::waitpid(child, nullptr, 0), child);
    // The kernel drops the exited process from the cgroup asynchronously.
    Expected<void> destroyed = Error("not tried");
    for (int attempt = 0; attempt < 100 && !destroyed; ++attempt) {
        destroyed = cgroup.destroy();
        if (!destroyed)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(destroyed) << destroyed.error().message();
}

TEST_F(RealCgroup, OpenExisting_FindsCreatedCgroupOnly) {
    auto created = MUST(Cgroup::create(m_hierarchies, m_parent, "vm", { 400, std::nullopt, std::nullopt }));
    auto const opened = Cgroup::open_existing(m_hierarchies, m_parent, "vm");
    ASSERT_TRUE(opened) << opened.error().message();
    EXPECT_EQ(opened->paths(), created.paths());
    EXPECT_EQ(MUST(opened->limits()).cpu_weight, 400u);
    auto const missing = Cgroup::open_existing(m_hierarchies, m_parent, "other");
    ASSERT_FALSE(missing);
    EXPECT_THAT(missing.error().message(), HasSubstr("other"));
    ASSERT_TRUE(created.destroy());
}

TEST(CgroupNames, PathEscapes_AreRejected) {
    CgroupHierarchies hierarchies;
    hierarchies.version = CgroupHierarchies::Version::V2;
    hierarchies.unified = "/nonexistent";
    EXPECT_THAT(Cgroup::create(hierarchies, "kvmm", "..", {}).error().message(), HasSubstr(".."));
    EXPECT_THAT(Cgroup::create(hierarchies, "../etc", "vm", {}).error().message(), HasSubstr("../etc"));
    EXPECT_THAT(Cgroup::create(hierarchies, "/abs", "vm", {}).error().message(), HasSubstr("relative"));
    EXPECT_THAT(Cgroup::create(hierarchies, "kvmm", "a/b", {}).error().message(), HasSubstr("a/b"));
}

class MountsFile : public ::testing::Test {
protected:
    void SetUp() override {
        std::string pattern = ::testing::TempDir() + "kvmm-mounts-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        m_directory = pattern;
    }
    void TearDown() override {
        std::error_code ignored;
        fs::remove_all(m_directory, ignored);
    }
    fs::path write_mounts(std::string const& text) {
        auto const path = m_directory / "mounts";
        std::ofstream(path) << text;
        return path;
    }
    fs::path m_directory;
};

TEST_F(MountsFile, V1Hierarchies_AreFoundByController) {
    auto const mounts = write_mounts("proc /proc proc rw 0 0\n"
                                     "cgroup /c/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"
                                     "cgroup /c/mem\\040ory cgroup rw,memory 0 0\n"
                                     "cgroup /c/cpuset cgroup rw,cpuset 0 0\n");
    auto const found = CgroupHierarchies::detect(mounts);
    ASSERT_TRUE(found) << found.error().message();
    EXPECT_EQ(found->version, CgroupHierarchies::Version::V1);
    EXPECT_EQ(found->cpu, "/c/cpu,cpuacct");
    EXPECT_EQ(found->cpuacct, "/c/cpu,cpuacct");
    EXPECT_EQ(found->memory, "/c/mem ory");
}

TEST_F(MountsFile, V2WithControllers_IsPreferred) {
    fs::create_directory(m_directory / "unified");
    std::ofstream(m_directory / "unified" / "cgroup.controllers") << "cpuset cpu io memory pids\n";
    auto const mounts = write_mounts("cgroup2 " + (m_directory / "unified").string() +
                                     " cgroup2 rw 0 0\ncgroup /c/cpu cgroup rw,cpu 0 0\n");
    auto const found = CgroupHierarchies::detect(mounts);
    ASSERT_TRUE(found) << found.error().message();
    EXPECT_EQ(found->version, CgroupHierarchies::Version::V2);
    EXPECT_EQ(found->unified, m_directory / "unified");
}

TEST_F(MountsFile, V2WithoutControllersAndIncompleteV1_IsAnError) {
    fs::create_directory(m_directory / "unified");
    std::ofstream(m_directory / "unified" / "cgroup.controllers") << "\n"; // hybrid mode: all bound to v1
    auto const mounts = write_mounts("cgroup2 " + (m_directory / "unified").string() +
                                     " cgroup2 rw 0 0\ncgroup /c/cpu cgroup rw,cpu,cpuacct 0 0\n");
    auto const found = CgroupHierarchies::detect(mounts);
    ASSERT_FALSE(found);
    EXPECT_THAT(found.error().message(), HasSubstr("memory ''"));
}

pid_t current_thread_id() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

TEST(PinVcpuThreads, NamedThreads_GetTheirAffinity) {
    cpu_set_t allowed;
    ASSERT_EQ(::sched_getaffinity(0, sizeof(allowed), &allowed), 0);
    std::vector<uint32_t> cpus;
    for (uint32_t cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &allowed))
            cpus.push_back(cpu);
    }
    ASSERT_FALSE(cpus.empty());
    uint32_t const first = cpus.front();
    uint32_t const last = cpus.back();

    // Two threads named like kvmm's vCPU threads, plus one whose name only looks similar.
    std::atomic<bool> stop { false };
    std::atomic<int> started { 0 };
    pid_t ids[3] {};
    std::vector<std::thread> threads;
    char const* const names[3] = { "vcpu0", "vcpu1", "vcpuX" };
    for (int i = 0; i < 3; ++i) {
        threads.emplace_back([&, i] {
            pthread_setname_np(pthread_self(), names[i]);
            ids[i] = current_thread_id();
            ++started;
            while (!stop)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        });
    }
    while (started < 3)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));

    auto const found = find_vcpu_threads(::getpid());
    ASSERT_TRUE(found) << found.error().message();
    EXPECT_EQ(*found, (std::vector<std::pair<uint32_t, pid_t>> { { 0, ids[0] }, { 1, ids[1] } }));

    auto const pinned = pin_vcpu_threads(::getpid(), { { first }, { last } });
    EXPECT_TRUE(pinned) << pinned.error().message();
    for (int i = 0; i < 2; ++i) {
        cpu_set_t set;
        ASSERT_EQ(::sched_getaffinity(ids[i], sizeof(set), &set), 0);
        EXPECT_EQ(CPU_COUNT(&set), 1) << names[i];
        EXPECT_TRUE(CPU_ISSET(i == 0 ? first : last, &set)) << names[i];
    }
    cpu_set_t unpinned;
    ASSERT_EQ(::sched_getaffinity(ids[2], sizeof(unpinned), &unpinned), 0);
    EXPECT_TRUE(CPU_EQUAL(&unpinned, &allowed));

    auto const missing = pin_vcpu_threads(::getpid(), { {}, {}, { first } });
    ASSERT_FALSE(missing);
    EXPECT_THAT(missing.error().message(), HasSubstr("vcpu2"));

    stop = true;
    for (auto& thread : threads)
        thread.join();
}

} // namespace
} // namespace kvmm

#include "cli/vmm_control.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace kvmm {
namespace {

using namespace std::chrono_literals;

// The metrics sink: the read end of a non-blocking pipe, split into lines.
class MetricsPipe {
public:
    MetricsPipe() {
        int fds[2];
        EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
        m_read = UniqueFd(fds[0]);
        m_write = UniqueFd(fds[1]);
    }
    UniqueFd take_sink() { return std::move(m_write); }

    std::vector<nlohmann::json> lines() {
        char buffer[4096];
        ssize_t received;
        while ((received = ::read(m_read.get(), buffer, sizeof(buffer))) > 0)
            m_text.append(buffer, static_cast<size_t>(received));
        std::vector<nlohmann::json> parsed;
        size_t start = 0;
        for (size_t end; (end = m_text.find('\n', start)) != std::string::npos; start = end + 1)
            parsed.push_back(nlohmann::json::parse(m_text.substr(start, end - start)));
        return parsed;
    }

private:
    UniqueFd m_read;
    UniqueFd m_write;
    std::string m_text;
};

// Runs `loop` until `lines` holds `count` lines or `limit` passes (generous: a loaded machine).
std::vector<nlohmann::json> run_until_lines(EventLoop& loop, MetricsPipe& pipe, size_t count,
                                            std::chrono::milliseconds limit = 5s) {
    auto const deadline = std::chrono::steady_clock::now() + limit;
    auto lines = pipe.lines();
    while (lines.size() < count && std::chrono::steady_clock::now() < deadline) {
        MUST(loop.run_once(10ms));
        lines = pipe.lines();
    }
    return lines;
}

TEST(VmmControlMetrics, ConfiguredBeforeAttach_AreWrittenPeriodicallyOnTheAttachedLoop) {
    VmmControl control(20ms);
    MetricsPipe pipe;
    MUST(control.set_metrics(MetricsConfig { "metrics" }, pipe.take_sink()));
    auto loop = MUST(EventLoop::create());
    EXPECT_TRUE(pipe.lines().empty());
    MUST(control.attach_to_loop(loop));
    auto const lines = run_until_lines(loop, pipe, 3);
    ASSERT_GE(lines.size(), 3u);
    EXPECT_EQ(lines[0]["metrics"]["flushes"], 1);
    EXPECT_EQ(lines[2]["metrics"]["flushes"], 3);
    EXPECT_EQ(lines[0]["vmm"]["state"], "Not started");
    control.detach_from_loop();
}

TEST(VmmControlMetrics, ConfiguredAfterAttach_StartThePeriodAtOnce) {
    VmmControl control(20ms);
    auto loop = MUST(EventLoop::create());
    MUST(control.attach_to_loop(loop));
    MetricsPipe pipe;
    MUST(control.set_metrics(MetricsConfig { "metrics" }, pipe.take_sink()));
    EXPECT_GE(run_until_lines(loop, pipe, 2).size(), 2u);
    control.detach_from_loop();
}

TEST(VmmControlMetrics, NothingIsWrittenBeforeTheFirstPeriodOrAfterDetach) {
    VmmControl control(1000ms);
    auto loop = MUST(EventLoop::create());
    MUST(control.attach_to_loop(loop));
    MetricsPipe pipe;
    MUST(control.set_metrics(MetricsConfig { "metrics" }, pipe.take_sink()));
    MUST(loop.run_once(50ms));
    EXPECT_TRUE(pipe.lines().empty()) << "a line was written before the first period ended";
    control.detach_from_loop();
    EXPECT_EQ(MUST(loop.run_once(0ms)), 0); // the timer has left the loop
}

TEST(VmmControlMetrics, FlushWritesALineAtOnceAndOnlyOnceConfigured) {
    VmmControl control;
    EXPECT_FALSE(control.flush_metrics());
    MetricsPipe pipe;
    MUST(control.set_metrics(MetricsConfig { "metrics" }, pipe.take_sink()));
    EXPECT_FALSE(control.set_metrics(MetricsConfig { "again" }, UniqueFd()));
    control.count_request("PUT");
    MUST(control.flush_metrics());
    auto const lines = pipe.lines();
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0]["api_server"]["put_requests"], 1);
    EXPECT_EQ(lines[0]["metrics"]["flushes"], 1);
}

TEST(VmmControlMetrics, SecondAttachIsRefused) {
    VmmControl control;
    auto loop = MUST(EventLoop::create());
    auto other = MUST(EventLoop::create());
    MUST(control.attach_to_loop(loop));
    EXPECT_FALSE(control.attach_to_loop(other));
    control.detach_from_loop();
    MUST(control.attach_to_loop(other));
    control.detach_from_loop();
}

} // namespace
} // namespace kvmm

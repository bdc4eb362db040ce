#include "base/rate_limited_log.h"

#include "base/testing/manual_clock.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace kvmm {
namespace {

using std::chrono::milliseconds;
using testing::ManualClock;

// Sends spdlog's default logger into a string for the lifetime of the object.
class CapturedLog {
public:
    CapturedLog() : m_previous(spdlog::default_logger()) {
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(m_text);
        auto logger = std::make_shared<spdlog::logger>("captured", sink);
        logger->set_pattern("%l %v");
        logger->set_level(spdlog::level::trace);
        spdlog::set_default_logger(logger);
    }
    ~CapturedLog() { spdlog::set_default_logger(m_previous); }
    CapturedLog(CapturedLog const&) = delete;
    CapturedLog& operator=(CapturedLog const&) = delete;

    std::vector<std::string> lines() const {
        std::vector<std::string> result;
        std::istringstream stream(m_text.str());
        for (std::string line; std::getline(stream, line);)
            result.push_back(line);
        return result;
    }

private:
    std::ostringstream m_text;
    std::shared_ptr<spdlog::logger> m_previous;
};

TEST(RateLimitedLog, FirstMessage_IsWrittenAsWarning) {
    CapturedLog captured;
    ManualClock clock;
    RateLimitedLog log(std::chrono::seconds(1), clock);
    log.warn("virtio {}: bad offset {:#x}", "rng", 0x44);
    EXPECT_EQ(captured.lines(), std::vector<std::string> { "warning virtio rng: bad offset 0x44" });
}

TEST(RateLimitedLog, MessagesWithinInterval_AreCountedAndReportedOnTheNextLine) {
    CapturedLog captured;
    ManualClock clock;
    RateLimitedLog log(std::chrono::seconds(1), clock);
    log.warn("error {}", 1);
    for (int i = 2; i <= 4; ++i) {
        clock.advance(milliseconds(300));
        log.warn("error {}", i);
    }
    EXPECT_EQ(log.suppressed(), 3u);
    clock.advance(milliseconds(100)); // exactly one second after the first line
    log.warn("error {}", 5);
    EXPECT_EQ(log.suppressed(), 0u);
    clock.advance(milliseconds(1000));
    log.warn("error {}", 6);
    EXPECT_EQ(captured.lines(),
              (std::vector<std::string> { "warning error 1", "warning error 5 (3 similar messages suppressed)",
                                          "warning error 6" }));
}

TEST(RateLimitedLog, IntervalCountsFromTheLastWrittenLine_NotTheLastDroppedOne) {
    CapturedLog captured;
    ManualClock clock;
    RateLimitedLog log(milliseconds(500), clock);
    log.warn("a");
    clock.advance(milliseconds(400));
    log.warn("b"); // dropped
    clock.advance(milliseconds(100));
    log.warn("c"); // 500 ms after "a": written, although only 100 ms after "b"
    EXPECT_EQ(captured.lines(),
              (std::vector<std::string> { "warning a", "warning c (1 similar messages suppressed)" }));
}

TEST(RateLimitedLog, ConcurrentWriters_EveryMessageIsWrittenOrCounted) {
    CapturedLog captured;
    ManualClock clock; // never advanced: only the very first message is written
    RateLimitedLog log(std::chrono::seconds(1), clock);
    constexpr int THREADS = 4;
    constexpr int MESSAGES = 1000;
    std::vector<std::thread> threads;
    threads.reserve(THREADS);
    for (int t = 0; t < THREADS; ++t)
        threads.emplace_back([&log, t] {
            for (int i = 0; i < MESSAGES; ++i)
                log.warn("thread {} message {}", t, i);
        });
    for (auto& thread : threads)
        thread.join();
    EXPECT_EQ(captured.lines().size(), 1u);
    EXPECT_EQ(log.suppressed(), uint64_t { THREADS * MESSAGES - 1 });
}

} // namespace
} // namespace kvmm

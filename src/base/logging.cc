#include "base/logging.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace kvmm {

Expected<spdlog::level::level_enum> parse_log_level(std::string_view name) {
    static constexpr std::pair<std::string_view, spdlog::level::level_enum> LEVELS[] = {
        { "trace", spdlog::level::trace }, { "debug", spdlog::level::debug }, { "info", spdlog::level::info },
        { "warn", spdlog::level::warn },   { "error", spdlog::level::err },   { "off", spdlog::level::off },
    };
    for (auto const& [level_name, level] : LEVELS) {
        if (level_name == name)
            return level;
    }
    return Error::format("unknown log level '{}' (expected trace, debug, info, warn, error or off)", name);
}

void init_logging(spdlog::level::level_enum level) {
    auto logger = spdlog::stderr_logger_mt("kvmm");
    logger->set_pattern("[%H:%M:%S.%f] [%^%l%$] %v");
    logger->set_level(level);
    spdlog::set_default_logger(std::move(logger));
}

namespace {
// Captured during static initialisation, before main(): the earliest point this process's own
// code runs after exec() and dynamic linking. /proc/self/stat's start time would include the
// loader but only has clock-tick (10 ms) resolution, too coarse for a boot-time marker.
auto const PROCESS_START = std::chrono::steady_clock::now();
} // namespace

std::chrono::microseconds time_since_process_start() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - PROCESS_START);
}

} // namespace kvmm

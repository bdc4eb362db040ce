// Logging: spdlog, writing to stderr, with a level chosen on the command line.
// Also the process start time, so that the guest's boot-time marker can say how
// long after exec() it fired.
#pragma once

#include "base/expected.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <string_view>

namespace kvmm {

// Accepts trace, debug, info, warn, error, off (case-sensitive, as spdlog names them).
Expected<spdlog::level::level_enum> parse_log_level(std::string_view name);

// Installs the stderr logger at `level`. Call once, early in main().
void init_logging(spdlog::level::level_enum level);

// Time since this process's static initialisation (just after exec and dynamic linking).
std::chrono::microseconds time_since_process_start();

} // namespace kvmm

// The out-of-line parts of fmt and spdlog that kvmm uses, compiled into kvmm itself for its
// static link (docs/ARCHITECTURE.md, "Start-up and memory").
//
// Why: Debian ships fmt and spdlog only as shared libraries (no .a archives), and a kvmm that
// carries libstdc++ statically cannot load libspdlog.so, which needs libstdc++.so beside it.
// Every other file of kvmm is compiled against these libraries' "compiled library" headers
// (SPDLOG_COMPILED_LIB, external fmt), which declare these functions without defining them;
// this file defines exactly those declarations by including the libraries' own inline-definition
// headers once, so a statically linked kvmm and the dynamically linked tests run the same code.
// Only linked into executables built with the KVMM_STATIC_EXECUTABLE property
// (cmake/kvmm.cmake); the tests keep the shared libraries.
#include <fmt/format-inl.h>

#include <spdlog/common-inl.h>
#include <spdlog/details/backtracer-inl.h>
#include <spdlog/details/file_helper-inl.h>
#include <spdlog/details/log_msg-inl.h>
#include <spdlog/details/log_msg_buffer-inl.h>
#include <spdlog/details/os-inl.h>
#include <spdlog/details/periodic_worker-inl.h>
#include <spdlog/details/registry-inl.h>
#include <spdlog/logger-inl.h>
#include <spdlog/pattern_formatter-inl.h>
#include <spdlog/sinks/ansicolor_sink-inl.h>
#include <spdlog/sinks/base_sink-inl.h>
#include <spdlog/sinks/sink-inl.h>
#include <spdlog/sinks/stdout_sinks-inl.h>
#include <spdlog/spdlog-inl.h>

#include <mutex>
#include <string>

// fmt's function templates that its headers declare FMT_API and leave to the library: the
// character type kvmm formats (char) and the floating-point shortest-representation routine.
namespace fmt {
inline namespace v9 {
namespace detail {
template auto thousands_sep_impl<char>(locale_ref) -> thousands_sep_result<char>;
template auto decimal_point_impl<char>(locale_ref) -> char;
namespace dragonbox {
template auto to_decimal<float>(float) noexcept -> decimal_fp<float>;
template auto to_decimal<double>(double) noexcept -> decimal_fp<double>;
} // namespace dragonbox
} // namespace detail
} // namespace v9
} // namespace fmt

// spdlog's class and function templates that kvmm instantiates through the compiled-library
// headers: the mutex-guarded sink base, the stderr logger of base/logging.cc, and the colour
// stdout sink of the default logger that spdlog's registry creates before init_logging replaces it.
template class spdlog::sinks::base_sink<std::mutex>;
template class spdlog::sinks::stdout_sink_base<spdlog::details::console_mutex>;
template class spdlog::sinks::stderr_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_stdout_sink<spdlog::details::console_mutex>;
template std::shared_ptr<spdlog::logger>
spdlog::stderr_logger_mt<spdlog::synchronous_factory>(std::string const& logger_name);

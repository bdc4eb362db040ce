// ByteSink: where a console device's output goes - stdout, a file, or nowhere.
//
// Threading: write() may be called from any vCPU thread; implementations are
// safe for concurrent use (write(2) on one fd is atomic per call).
#pragma once

#include "base/expected.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace kvmm {

class ByteSink {
public:
    virtual ~ByteSink() = default;
    virtual void write(std::span<uint8_t const> bytes) = 0;
};

std::unique_ptr<ByteSink> make_stdout_sink();
// Creates or truncates `path` (mode 0644); the error names the path.
Expected<std::unique_ptr<ByteSink>> make_file_sink(std::string const& path);
std::unique_ptr<ByteSink> make_null_sink();

} // namespace kvmm

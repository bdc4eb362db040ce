// ByteSink: where a console device's output goes.
//
// A console device (the 16550 on vCPU threads, the virtio console) calls write() and must never
// wait for the host: real outputs (stdout, a file) are a BufferedSink's writer
// (devices/legacy/buffered_sink.h), the console socket is ConsoleServer's fan-out; both only
// append to a bounded buffer that the event loop drains.
//
// Threading: write() may be called from any thread; implementations are safe for concurrent use.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

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

// The console's file (--console file=PATH): created or truncated, close-on-exec, mode 0600
// (an existing regular file is made 0600 too: the guest's console may show secrets, and the
// file is kvmm's from here on); the error names the path.
Expected<UniqueFd> open_console_file(std::string const& path);
std::unique_ptr<ByteSink> make_null_sink();

} // namespace kvmm

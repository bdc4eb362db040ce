// DebugConsole: QEMU's ISA debug console ("isa-debugcon", QEMU docs/system/.. -debugcon), the
// one-byte port firmware writes its diagnostic log to. SeaBIOS built with CONFIG_DEBUG_IO
// (Debian's microvm build is) reads DEBUG_CONSOLE_PORT first and writes its debug log there
// only when the read returns DEBUG_CONSOLE_READBACK (src/hw/serialio.c, qemu_debug_preinit),
// so without this device the firmware's log is simply not produced.
//
// Bytes are collected into lines (at most MAX_LINE bytes; longer lines are cut) and each line
// goes to the callback without its newline; the callback decides where (kvmm logs them at
// debug level). Control characters other than tab are replaced by '?', so a guest cannot
// write escape sequences into a host log.
//
// Threading: the line buffer is guarded by a mutex; the callback runs on the writing vCPU's
// thread. Its saved state is empty: a partial line is dropped across a snapshot.
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "base/thread_annotations.h"
#include "devices/bus/bus_device.h"

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace kvmm {

inline constexpr uint16_t DEBUG_CONSOLE_PORT = 0x402;
inline constexpr uint8_t DEBUG_CONSOLE_READBACK = 0xE9;

struct DebugConsoleState {
    static constexpr std::string_view SECTION = "debug-console";
    static constexpr uint32_t VERSION = 1;

    bool operator==(DebugConsoleState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<DebugConsoleState> decode(StateReader& reader);
};

class DebugConsole final : public BusDevice {
public:
    static constexpr size_t MAX_LINE = 512;

    explicit DebugConsole(std::function<void(std::string_view)> on_line) : m_on_line(std::move(on_line)) {}

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    DebugConsoleState save() const { return {}; }
    Expected<void> restore(DebugConsoleState const&) { return {}; }

private:
    std::function<void(std::string_view)> m_on_line;
    Mutex m_lock;
    std::string m_line GUARDED_BY(m_lock);
};

} // namespace kvmm

// ConsoleInput: forwards the host's stdin to the guest's serial port.
//
// When stdin is a terminal it is put in raw mode (no echo, no line editing, so
// the guest's shell does both), except that signals stay on: Ctrl-C stops kvmm.
// The terminal is restored by the destructor. Input is taken only as fast as
// the UART's bounded receive buffer drains: pending bytes wait here (at most
// one read's worth) and stdin is not read again until they are delivered.
//
// Threading: used only by the event-loop thread.
#pragma once

#include "base/expected.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <termios.h>
#include <vector>

namespace kvmm {

class ConsoleInput {
public:
    // `deliver` hands bytes to the guest and returns how many it accepted.
    using Deliver = std::function<size_t(std::span<uint8_t const>)>;

    static Expected<ConsoleInput> create(int fd, Deliver deliver);
    ~ConsoleInput();
    ConsoleInput(ConsoleInput&& other) noexcept;
    ConsoleInput& operator=(ConsoleInput&&) = delete;
    ConsoleInput(ConsoleInput const&) = delete;

    int fd() const { return m_fd; }
    // True while bytes wait for room in the guest's buffer; the caller then retries with
    // flush_pending() on a short timer instead of polling fd().
    bool has_pending() const { return m_pending_offset < m_pending.size(); }
    // Reads what is available; returns false at end of input (the caller stops polling).
    bool on_readable();
    void flush_pending();

private:
    ConsoleInput(int fd, Deliver deliver, std::optional<termios> saved)
        : m_fd(fd), m_deliver(std::move(deliver)), m_saved_terminal(saved) {}

    int m_fd;
    Deliver m_deliver;
    std::optional<termios> m_saved_terminal;
    std::vector<uint8_t> m_pending;
    size_t m_pending_offset { 0 };
};

} // namespace kvmm

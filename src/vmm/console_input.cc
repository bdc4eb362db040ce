#include "vmm/console_input.h"

#include <cerrno>
#include <unistd.h>

namespace kvmm {

Expected<ConsoleInput> ConsoleInput::create(int fd, Deliver deliver) {
    std::optional<termios> saved;
    if (::isatty(fd)) {
        termios current {};
        if (::tcgetattr(fd, &current) != 0)
            return Error::from_errno("tcgetattr on the console");
        saved = current;
        termios raw = current;
        cfmakeraw(&raw);
        raw.c_lflag |= ISIG;          // keep Ctrl-C/Ctrl-\ as signals to kvmm
        raw.c_oflag |= OPOST | ONLCR; // kvmm's own log lines still start at column 0
        if (::tcsetattr(fd, TCSANOW, &raw) != 0)
            return Error::from_errno("tcsetattr (raw mode) on the console");
    }
    return ConsoleInput(fd, std::move(deliver), saved);
}

ConsoleInput::ConsoleInput(ConsoleInput&& other) noexcept
    : m_fd(other.m_fd), m_deliver(std::move(other.m_deliver)), m_saved_terminal(other.m_saved_terminal),
      m_pending(std::move(other.m_pending)), m_pending_offset(other.m_pending_offset) {
    other.m_saved_terminal.reset();
}

ConsoleInput::~ConsoleInput() {
    if (m_saved_terminal)
        ::tcsetattr(m_fd, TCSANOW, &*m_saved_terminal);
}

bool ConsoleInput::on_readable() {
    if (has_pending())
        return true;
    uint8_t buffer[4096];
    ssize_t const got = ::read(m_fd, buffer, sizeof(buffer));
    if (got < 0)
        return errno == EINTR || errno == EAGAIN;
    if (got == 0)
        return false;
    m_pending.assign(buffer, buffer + got);
    m_pending_offset = 0;
    flush_pending();
    return true;
}

void ConsoleInput::flush_pending() {
    if (!has_pending())
        return;
    m_pending_offset += m_deliver(std::span(m_pending).subspan(m_pending_offset));
    if (!has_pending()) {
        m_pending.clear();
        m_pending_offset = 0;
    }
}

} // namespace kvmm

// BufferedSink: console output that never blocks the thread that produces it.
//
// A console device writes its guest's output through make_writer(): the 16550 on vCPU
// threads, the virtio console on the event loop (and on vCPU threads for EMERG_WRITE). The
// writer copies the bytes into a fixed ring of `capacity` bytes under a short lock and returns;
// the event loop drains the ring into the host file descriptor with writes that never wait.
// When the host does not keep up (a pipe nobody reads, a stopped terminal, a slow socket) and
// the ring is full, new output is dropped and counted, never queued without bound and never
// waited for; the first drop of each episode gets a warning, rate-limited. Bytes are written in
// the order they were produced; a drop leaves a gap, never a reordering.
//
// The loop is woken through an eventfd only when the ring goes from empty to non-empty (or a
// drop episode starts, so it can log): a guest printing byte by byte costs one wake-up per
// burst, not one per byte. Each wake-up writes at most SLICE bytes, then yields to the rest of
// the loop and comes back (fd writability, or another eventfd turn for regular files).
//
// How the host fd is written without blocking, by what it is (decided once, in create()):
// - a pipe, FIFO or character device (terminal): O_NONBLOCK on a file description that is
//   ours alone. An inherited fd (stdout) shares its description with the parent - a shell's
//   terminal, a supervisor's pipe - and O_NONBLOCK there would change the parent's I/O too, so
//   it is re-opened through /proc/self/fd to get a private description of the same pipe or
//   terminal. epoll reports when it can take more.
// - a socket: send() with MSG_DONTWAIT | MSG_NOSIGNAL on the fd as it is (a socket cannot be
//   re-opened, and the per-call flag leaves the shared description alone).
// - a regular file (or anything epoll cannot watch): plain write(2); a file never waits for a
//   reader, so the write cannot block for long.
// A reader that has gone (EPIPE, ECONNRESET) ends the output for good (later bytes are dropped
// and counted), without the SIGPIPE that would end kvmm; other write errors drop what was
// queued and the next output tries again.
//
// Threading: make_writer()'s sink may be written from any thread and stays valid (dropping and
// counting) after the BufferedSink is gone. create(), flush(), the destructor and every loop
// callback run on the event loop's thread; counters() from any thread.
#pragma once

#include "base/event_loop.h"
#include "base/expected.h"
#include "base/rate_limited_log.h"
#include "base/unique_fd.h"
#include "devices/legacy/byte_sink.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>

namespace kvmm {

class BufferedSink {
public:
    // 1 MiB holds a whole boot log (a Linux kernel's log buffer is 128 KiB to 1 MiB) and about
    // 90 s of a real 115200-baud UART, so a reader that stalls briefly (a terminal being
    // scrolled, a log collector restarting) loses nothing; and it is small enough that a host
    // with a thousand VMs pays at most 1 GiB for consoles nobody reads, and that the flush at
    // exit has a bounded amount to write. Pages are touched only as output arrives.
    static constexpr size_t DEFAULT_CAPACITY = 1024 * 1024;
    // The most bytes one wake-up of the loop writes before it lets other handlers run.
    static constexpr size_t SLICE = 64 * 1024;
    // How long exit waits, at most, for the host to take what is still queued.
    static constexpr std::chrono::milliseconds FINAL_FLUSH_TIMEOUT { 250 };

    enum class Kind { Stream, Socket, File };
    // Whether the fd's open file description may be shared with other processes (stdout) or
    // was opened by kvmm for this sink alone (--console file=PATH).
    enum class Description { Inherited, Private };

    // `fd` is borrowed when inherited (it must outlive the sink) and owned otherwise. `name`
    // says where the output goes, for log lines.
    static Expected<std::unique_ptr<BufferedSink>> create(EventLoop& loop, int fd, Description description,
                                                          std::string name, size_t capacity = DEFAULT_CAPACITY);

    // --console file=PATH: a regular file that never grows past `max_file_size`. Before a
    // write would take it over the limit, PATH is renamed to PATH.1 (replacing the previous
    // one) and a new PATH (mode 0600) takes the output, so the console costs at most twice the
    // limit of disk however much the guest prints. The new file takes the old one's fd number
    // (dup3), so nothing else has to follow it. A failed rotation truncates PATH instead (the
    // file stays capped) and logs why. A PATH that is not a regular file (/dev/stdout, a FIFO)
    // is written as before, without a limit.
    static constexpr uint64_t DEFAULT_MAX_CONSOLE_FILE_SIZE = 16ull << 20;
    static Expected<std::unique_ptr<BufferedSink>> create_console_file(EventLoop& loop, std::string const& path,
                                                                       uint64_t max_file_size,
                                                                       size_t capacity = DEFAULT_CAPACITY);
    // Flushes (FINAL_FLUSH_TIMEOUT) unless flush() ran already, and leaves the loop.
    ~BufferedSink();
    BufferedSink(BufferedSink const&) = delete;
    BufferedSink& operator=(BufferedSink const&) = delete;

    std::unique_ptr<ByteSink> make_writer();

    // At exit: writes what is queued, waiting for the host at most `timeout` in all (never for
    // a reader that does not come), then closes: what is left and all later output is dropped
    // and counted. Event-loop thread, while the loop is not running callbacks.
    void flush(std::chrono::milliseconds timeout = FINAL_FLUSH_TIMEOUT);

    // Writes one slice of what is queued, as far as the host takes it without waiting, and
    // re-arms for the rest. Event-loop thread. Pause calls it: while paused only the control
    // loop runs, so output the guest produced before the pause would otherwise wait for resume.
    void write_pending() { drain_and_rearm(); }

    struct Counters {
        uint64_t bytes_written { 0 }; // taken by the host fd
        uint64_t bytes_dropped { 0 }; // produced but never written (full ring, write error, exit)
    };
    Counters counters() const;
    Kind kind() const { return m_kind; }

    struct Shared; // the ring and counters the writers share with the drain

private:
    enum class Drained { Empty, WouldBlock, SliceUsed, Closed };

    BufferedSink(EventLoop& loop, Kind kind, int fd, UniqueFd owned, std::string name, std::shared_ptr<Shared> shared);

    void on_wake();
    void drain_and_rearm();
    Drained drain(size_t budget);
    // Writes to the host fd without blocking; a write(2)-style result with errno set.
    ssize_t write_host(uint8_t const* data, size_t size);
    // Moves the full console file to PATH.1 and puts a fresh one at the same fd number.
    void rotate_console_file();
    void leave_loop();

    EventLoop& m_loop;
    Kind m_kind;
    int m_fd;
    UniqueFd m_owned;
    std::string m_name;
    std::shared_ptr<Shared> m_shared;
    RateLimitedLog m_log;
    bool m_polled { false };  // m_fd is registered in the loop (Stream and Socket kinds)
    bool m_in_loop { false }; // the eventfd (and m_fd when polled) are registered
    bool m_flushed { false };
    // Set by create_console_file for a regular file: its path, limit and current size.
    struct Rotation {
        std::string path;
        uint64_t max_size;
        uint64_t size;
    };
    std::optional<Rotation> m_rotation;
};

} // namespace kvmm

#include "devices/legacy/buffered_sink.h"

#include "base/event_fd.h"
#include "base/thread_annotations.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kvmm {

struct BufferedSink::Shared {
    Shared(EventFd event, size_t ring_capacity)
        : wake(std::move(event)), capacity(ring_capacity),
          ring(std::make_unique_for_overwrite<uint8_t[]>(ring_capacity)) {}

    // Copies what fits behind the queued bytes; the rest is dropped and counted. Any thread.
    void append(std::span<uint8_t const> bytes) {
        if (bytes.empty())
            return;
        bool signal = false;
        {
            MutexLock guard(lock);
            if (closed) {
                dropped += bytes.size();
                return;
            }
            size_t const taken = std::min(bytes.size(), capacity - size);
            size_t const tail = (head + size) % capacity;
            size_t const first = std::min(taken, capacity - tail);
            std::memcpy(ring.get() + tail, bytes.data(), first);
            std::memcpy(ring.get(), bytes.data() + first, taken - first);
            signal = size == 0 && taken > 0;
            size += taken;
            if (taken < bytes.size()) {
                dropped += bytes.size() - taken;
                if (!dropping) {
                    dropping = true;
                    drop_started = true;
                    signal = true; // so the loop can say so, even if the host never takes a byte again
                }
            }
        }
        if (signal)
            (void)wake.signal();
    }

    // Drops everything queued (counted) and, with `close`, all later output too; returns how
    // many bytes were dropped. Any thread.
    uint64_t discard_queued(bool close) {
        MutexLock guard(lock);
        uint64_t const discarded = size;
        dropped += discarded;
        head = 0;
        size = 0;
        closed = close;
        return discarded;
    }

    EventFd wake; // "there is output" (or "a drop episode started"), writer to loop
    size_t const capacity;
    // Bytes [head, head + size) modulo capacity are queued. Writers only ever fill the free
    // part and the drain only reads the queued part, so the drain writes from the ring to the
    // host without holding the lock.
    std::unique_ptr<uint8_t[]> const ring;
    mutable Mutex lock; // guards everything below
    size_t head GUARDED_BY(lock) { 0 };
    size_t size GUARDED_BY(lock) { 0 };
    uint64_t written GUARDED_BY(lock) { 0 };
    uint64_t dropped GUARDED_BY(lock) { 0 };
    bool dropping GUARDED_BY(lock) { false };     // output was dropped and the host has taken nothing since
    bool drop_started GUARDED_BY(lock) { false }; // a drop episode began and the loop has not logged it yet
    bool closed GUARDED_BY(lock) { false };       // no more output is taken (the reader went away, or exit)
};

namespace {

class Writer final : public ByteSink {
public:
    explicit Writer(std::shared_ptr<BufferedSink::Shared> shared) : m_shared(std::move(shared)) {}
    void write(std::span<uint8_t const> bytes) override { m_shared->append(bytes); }

private:
    std::shared_ptr<BufferedSink::Shared> m_shared;
};

// write(2) to a pipe whose reader has gone raises SIGPIPE, which would end kvmm (it keeps the
// default action, like any program writing to a pipe). For a console that must not stop the
// guest, so SIGPIPE is blocked around the write and the one it raised (thread-directed) is
// taken back before the mask is restored; one already pending for another reason is left.
ssize_t write_without_sigpipe(int fd, uint8_t const* data, size_t size) {
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    sigset_t previous;
    pthread_sigmask(SIG_BLOCK, &pipe_signal, &previous);
    sigset_t pending;
    sigpending(&pending);
    bool const already_pending = sigismember(&pending, SIGPIPE) == 1;
    ssize_t const written = ::write(fd, data, size);
    int const saved_errno = errno;
    if (written < 0 && saved_errno == EPIPE && !already_pending) {
        timespec const no_wait {};
        (void)::sigtimedwait(&pipe_signal, nullptr, &no_wait);
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    errno = saved_errno;
    return written;
}

// The reader is gone for good: nothing written later can arrive.
bool reader_gone(int error) { return error == EPIPE || error == ECONNRESET || error == ENOTCONN || error == EBADF; }

} // namespace

Expected<std::unique_ptr<BufferedSink>> BufferedSink::create(EventLoop& loop, int fd, Description description,
                                                             std::string name, size_t capacity) {
    UniqueFd owned(description == Description::Private ? fd : -1);
    if (capacity == 0)
        return Error::format("console output to {}: the buffer needs room for at least one byte", name);
    auto shared = std::make_shared<Shared>(TRY(EventFd::create()), capacity);
    Kind kind = Kind::File;
    int write_fd = fd;
    bool discarded = false;
    struct stat status {};
    if (::fstat(fd, &status) != 0) {
        // A closed stdout: there is nowhere to write, which must not stop the VM.
        spdlog::warn("console output to {} is discarded: {}", name, std::strerror(errno));
        discarded = true;
    } else if (S_ISSOCK(status.st_mode)) {
        kind = Kind::Socket;
    } else if (S_ISFIFO(status.st_mode) || S_ISCHR(status.st_mode)) {
        kind = Kind::Stream;
        if (description == Description::Inherited) {
            // A description of our own for the same pipe or terminal; see the header.
            auto const path = fmt::format("/proc/self/fd/{}", fd);
            owned = UniqueFd(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
            if (!owned.is_valid()) {
                // E.g. ENXIO, a FIFO whose reader has gone already. There is no other safe way to
                // write: the shared description must not become non-blocking.
                spdlog::warn("console output to {} is discarded: re-opening it: {}", name, std::strerror(errno));
                discarded = true;
            }
        } else {
            int const flags = ::fcntl(fd, F_GETFL);
            if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
                return Error::from_errno(fmt::format("console output to {}: O_NONBLOCK", name));
        }
        write_fd = owned.is_valid() ? owned.get() : fd;
    }
    if (discarded) {
        MutexLock guard(shared->lock); // no other thread has the buffer yet; taken for the analysis
        shared->closed = true;
    }
    std::unique_ptr<BufferedSink> sink(
        new BufferedSink(loop, kind, write_fd, std::move(owned), std::move(name), std::move(shared)));
    if (discarded)
        return sink; // nothing will ever be written: stay out of the loop
    auto* self = sink.get();
    if (kind != Kind::File) {
        // Registered for writability at once, which also proves epoll can watch it; parked
        // again right after until the host refuses a write.
        auto added = loop.add(write_fd, EventLoop::WRITABLE, [self](uint32_t) { self->drain_and_rearm(); });
        if (added) {
            sink->m_polled = true;
            TRY(loop.modify(write_fd, 0));
        } else if (kind == Kind::Stream) {
            sink->m_kind = Kind::File; // a character device without poll support: plain writes
        } else {
            return added.error();
        }
    }
    auto added = loop.add(sink->m_shared->wake.fd(), [self] { self->on_wake(); });
    if (!added) {
        if (sink->m_polled)
            loop.remove(write_fd);
        sink->m_polled = false;
        return added.error();
    }
    sink->m_in_loop = true;
    return sink;
}

BufferedSink::BufferedSink(EventLoop& loop, Kind kind, int fd, UniqueFd owned, std::string name,
                           std::shared_ptr<Shared> shared)
    : m_loop(loop), m_kind(kind), m_fd(fd), m_owned(std::move(owned)), m_name(std::move(name)),
      m_shared(std::move(shared)) {}

BufferedSink::~BufferedSink() {
    flush();
    leave_loop();
}

std::unique_ptr<ByteSink> BufferedSink::make_writer() { return std::make_unique<Writer>(m_shared); }

BufferedSink::Counters BufferedSink::counters() const {
    MutexLock guard(m_shared->lock);
    return Counters { m_shared->written, m_shared->dropped };
}

void BufferedSink::on_wake() {
    (void)m_shared->wake.consume();
    bool report = false;
    uint64_t dropped = 0;
    {
        MutexLock guard(m_shared->lock);
        report = std::exchange(m_shared->drop_started, false);
        dropped = m_shared->dropped;
    }
    if (report)
        m_log.warn("console output to {} is not taken as fast as the guest writes it: dropping output ({} bytes "
                   "dropped so far)",
                   m_name, dropped);
    drain_and_rearm();
}

void BufferedSink::drain_and_rearm() {
    auto const drained = drain(SLICE);
    bool const more = drained == Drained::WouldBlock || drained == Drained::SliceUsed;
    if (m_polled)
        (void)m_loop.modify(m_fd, more ? EventLoop::WRITABLE : 0u); // writable again: another slice
    else if (drained == Drained::SliceUsed)
        (void)m_shared->wake.signal(); // a regular file is always writable: come back next turn
}

BufferedSink::Drained BufferedSink::drain(size_t budget) {
    size_t done = 0;
    while (done < budget) {
        uint8_t const* start = nullptr;
        size_t length = 0;
        {
            MutexLock guard(m_shared->lock);
            if (m_shared->closed)
                return Drained::Closed;
            if (m_shared->size == 0)
                return Drained::Empty;
            start = m_shared->ring.get() + m_shared->head;
            length = std::min({ m_shared->size, m_shared->capacity - m_shared->head, budget - done });
        }
        ssize_t const written = write_host(start, length);
        if (written > 0) {
            auto const count = static_cast<size_t>(written);
            MutexLock guard(m_shared->lock);
            m_shared->head = (m_shared->head + count) % m_shared->capacity;
            m_shared->size -= count;
            m_shared->written += count;
            m_shared->dropping = false;
            done += count;
            continue;
        }
        int const error = written < 0 ? errno : EIO;
        if (error == EINTR)
            continue;
        if ((error == EAGAIN || error == EWOULDBLOCK) && m_polled)
            return Drained::WouldBlock;
        bool const gone = reader_gone(error);
        uint64_t const discarded = m_shared->discard_queued(gone);
        if (gone) {
            spdlog::warn("console output to {} has no reader any more ({}): {} queued bytes and all later output "
                         "dropped",
                         m_name, std::strerror(error), discarded);
            return Drained::Closed;
        }
        m_log.warn("console output to {} failed ({}): {} queued bytes dropped", m_name, std::strerror(error),
                   discarded);
        return Drained::Empty;
    }
    return Drained::SliceUsed;
}

ssize_t BufferedSink::write_host(uint8_t const* data, size_t size) {
    switch (m_kind) {
    case Kind::Socket:
        return ::send(m_fd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
    case Kind::Stream:
        return write_without_sigpipe(m_fd, data, size);
    case Kind::File:
        break;
    }
    if (!m_rotation)
        return ::write(m_fd, data, size);
    // A write larger than the whole limit goes in pieces, one file's worth at most.
    if (m_rotation->size + size > m_rotation->max_size && m_rotation->size > 0)
        rotate_console_file();
    size = static_cast<size_t>(std::min<uint64_t>(size, m_rotation->max_size - m_rotation->size));
    ssize_t const written = ::write(m_fd, data, size);
    if (written > 0)
        m_rotation->size += static_cast<uint64_t>(written);
    return written;
}

void BufferedSink::rotate_console_file() {
    auto& rotation = *m_rotation;
    rotation.size = 0;
    std::string const previous = rotation.path + ".1";
    auto const truncate_instead = [&](std::string const& why) {
        m_log.warn("console file {}: {}; truncating it instead", rotation.path, why);
        if (::ftruncate(m_fd, 0) != 0 || ::lseek(m_fd, 0, SEEK_SET) < 0)
            m_log.warn("console file {}: truncating: {}", rotation.path, std::strerror(errno));
    };
    if (::rename(rotation.path.c_str(), previous.c_str()) != 0)
        return truncate_instead(fmt::format("renaming it to {}: {}", previous, std::strerror(errno)));
    // O_EXCL: the name was just freed; anything that appeared there since (a planted link) is
    // not written through.
    UniqueFd fresh(::open(rotation.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fresh.is_valid())
        return truncate_instead(fmt::format("creating a new file: {}", std::strerror(errno)));
    // The old file (now PATH.1) is closed by dup3 as the new one takes its number.
    if (::dup3(fresh.get(), m_fd, O_CLOEXEC) < 0)
        return truncate_instead(fmt::format("dup3: {}", std::strerror(errno)));
}

Expected<std::unique_ptr<BufferedSink>> BufferedSink::create_console_file(EventLoop& loop, std::string const& path,
                                                                          uint64_t max_file_size, size_t capacity) {
    if (max_file_size == 0)
        return Error::format("console file '{}': the size limit must be at least one byte", path);
    auto file = TRY(open_console_file(path));
    struct stat status {};
    bool const regular = ::fstat(file.get(), &status) == 0 && S_ISREG(status.st_mode);
    auto sink = TRY(create(loop, file.release(), Description::Private, path, capacity));
    if (regular && sink->m_kind == Kind::File)
        sink->m_rotation = Rotation { path, max_file_size, 0 };
    return sink;
}

void BufferedSink::flush(std::chrono::milliseconds timeout) {
    if (m_flushed)
        return;
    m_flushed = true;
    auto const deadline = std::chrono::steady_clock::now() + timeout;
    while (drain(SIZE_MAX) == Drained::WouldBlock) {
        auto const left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            break;
        pollfd writable { m_fd, POLLOUT, 0 };
        (void)::poll(&writable, 1, static_cast<int>(left.count()));
    }
    uint64_t const left_behind = m_shared->discard_queued(true);
    if (left_behind > 0)
        spdlog::warn("console output to {}: {} bytes were not taken within {} ms at exit and are dropped", m_name,
                     left_behind, timeout.count());
    leave_loop();
}

void BufferedSink::leave_loop() {
    if (!m_in_loop)
        return;
    m_in_loop = false;
    m_loop.remove(m_shared->wake.fd());
    if (m_polled)
        m_loop.remove(m_fd);
    m_polled = false;
}

} // namespace kvmm

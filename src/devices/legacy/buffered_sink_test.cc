#include "devices/legacy/buffered_sink.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <poll.h>
#include <set>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace kvmm {
namespace {

using namespace std::chrono_literals;

std::span<uint8_t const> bytes_of(std::string_view text) {
    return { reinterpret_cast<uint8_t const*>(text.data()), text.size() };
}

// A pattern whose every position is distinguishable, so reordering or repeats show.
std::string numbered(size_t size, size_t offset = 0) {
    std::string text(size, '\0');
    for (size_t i = 0; i < size; ++i)
        text[i] = static_cast<char>('A' + (offset + i) % 23 + ((offset + i) / 23) % 3);
    return text;
}

struct Pipe {
    UniqueFd read_end;
    UniqueFd write_end;
};

Pipe make_pipe(int capacity = 0) {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    if (capacity > 0) {
        EXPECT_GE(::fcntl(fds[1], F_SETPIPE_SZ, capacity), capacity);
    }
    return Pipe { UniqueFd(fds[0]), UniqueFd(fds[1]) };
}

// Everything readable from `fd` now (non-blocking read).
std::string read_available(int fd) {
    std::string text;
    char buffer[4096];
    while (true) {
        pollfd readable { fd, POLLIN, 0 };
        if (::poll(&readable, 1, 0) != 1 || !(readable.revents & POLLIN))
            return text;
        ssize_t const got = ::read(fd, buffer, sizeof(buffer));
        if (got <= 0)
            return text;
        text.append(buffer, static_cast<size_t>(got));
    }
}

// Runs the loop until `done()` or `limit`, reading nothing itself.
bool run_until(EventLoop& loop, std::function<bool()> const& done, std::chrono::milliseconds limit = 5s) {
    auto const deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        (void)loop.run_once(10ms);
    }
    return true;
}

std::set<int> open_fds() {
    std::set<int> fds;
    DIR* directory = ::opendir("/proc/self/fd");
    while (auto* entry = ::readdir(directory))
        if (entry->d_name[0] != '.' && std::atoi(entry->d_name) != ::dirfd(directory))
            fds.insert(std::atoi(entry->d_name));
    ::closedir(directory);
    return fds;
}

std::string fd_target(int fd) {
    char target[256] {};
    auto const path = "/proc/self/fd/" + std::to_string(fd);
    ssize_t const length = ::readlink(path.c_str(), target, sizeof(target) - 1);
    return length > 0 ? std::string(target, static_cast<size_t>(length)) : std::string();
}

std::string temporary_path(char const* name) {
    char const* directory = std::getenv("TMPDIR");
    return std::string(directory ? directory : "/tmp") + "/kvmm_buffered_sink_test_" + std::to_string(::getpid()) +
           "_" + name;
}

std::string contents_of(std::string const& path) {
    std::ifstream file(path, std::ios::binary);
    std::ostringstream buffer;
    buffer << file.rdbuf();
    return buffer.str();
}

class BufferedSinkTest : public ::testing::Test {
protected:
    BufferedSinkTest() : m_loop_storage(MUST(EventLoop::create())), m_loop(*m_loop_storage) {}

    std::optional<EventLoop> m_loop_storage;
    EventLoop& m_loop;
};

TEST_F(BufferedSinkTest, DrainsAPipeInTheOrderTheBytesWereWritten) {
    auto pipe = make_pipe();
    auto sink = MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe"));
    EXPECT_EQ(sink->kind(), BufferedSink::Kind::Stream);
    auto writer = sink->make_writer();
    std::string expected;
    for (int chunk = 0; chunk < 50; ++chunk) {
        auto const text = numbered(static_cast<size_t>(chunk) * 7 + 1, expected.size());
        writer->write(bytes_of(text));
        expected += text;
    }
    std::string received;
    ASSERT_TRUE(run_until(m_loop, [&] {
        received += read_available(pipe.read_end.get());
        return received.size() >= expected.size();
    }));
    EXPECT_EQ(received, expected);
    EXPECT_EQ(sink->counters().bytes_written, expected.size());
    EXPECT_EQ(sink->counters().bytes_dropped, 0u);
}

TEST_F(BufferedSinkTest, AnInheritedPipeIsReopenedAndItsSharedDescriptionStaysBlocking) {
    auto pipe = make_pipe();
    auto const before = open_fds();
    auto sink = MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe"));
    EXPECT_FALSE(::fcntl(pipe.write_end.get(), F_GETFL) & O_NONBLOCK) << "the parent's description changed";
    // The sink writes through a description of its own: same pipe, non-blocking, close-on-exec.
    int reopened = -1;
    for (int fd : open_fds())
        if (!before.contains(fd) && fd_target(fd) == fd_target(pipe.write_end.get()))
            reopened = fd;
    ASSERT_GE(reopened, 0);
    EXPECT_TRUE(::fcntl(reopened, F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(::fcntl(reopened, F_GETFD) & FD_CLOEXEC);
}

TEST_F(BufferedSinkTest, AFullBufferDropsNewOutputAndCountsIt) {
    auto pipe = make_pipe();
    auto sink =
        MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe", 16));
    auto writer = sink->make_writer();
    writer->write(bytes_of("0123456789"));
    writer->write(bytes_of("abcdefghij")); // 6 fit, 4 are dropped
    writer->write(bytes_of("XYZ"));        // all dropped: what is queued is kept, not overwritten
    EXPECT_EQ(sink->counters().bytes_dropped, 7u);
    std::string received;
    ASSERT_TRUE(run_until(m_loop, [&] {
        received += read_available(pipe.read_end.get());
        return received.size() >= 16;
    }));
    EXPECT_EQ(received, "0123456789abcdef");
    // Room again: later output goes through, after the gap.
    writer->write(bytes_of("later"));
    ASSERT_TRUE(run_until(m_loop, [&] {
        received += read_available(pipe.read_end.get());
        return received.size() >= 21;
    }));
    EXPECT_EQ(received, "0123456789abcdeflater");
    EXPECT_EQ(sink->counters().bytes_written, 21u);
    EXPECT_EQ(sink->counters().bytes_dropped, 7u);
}

TEST_F(BufferedSinkTest, OutputWrapsAroundTheRingInOrder) {
    auto pipe = make_pipe();
    auto sink =
        MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe", 8));
    auto writer = sink->make_writer();
    std::string expected, received;
    for (int round = 0; round < 20; ++round) {
        auto const text = numbered(static_cast<size_t>(round % 8) + 1, expected.size());
        writer->write(bytes_of(text));
        expected += text;
        ASSERT_TRUE(run_until(m_loop, [&] {
            received += read_available(pipe.read_end.get());
            return received.size() >= expected.size();
        }));
    }
    EXPECT_EQ(received, expected);
    EXPECT_EQ(sink->counters().bytes_dropped, 0u);
}

TEST_F(BufferedSinkTest, APartialWriteWaitsForWritabilityAndResumesWhereTheHostStopped) {
    auto pipe = make_pipe(4096);
    int const pipe_capacity = ::fcntl(pipe.write_end.get(), F_GETPIPE_SZ);
    auto sink = MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe"));
    auto writer = sink->make_writer();
    auto const expected = numbered(static_cast<size_t>(pipe_capacity) * 5 / 2);
    writer->write(bytes_of(expected)); // the only write: everything after this is re-arming
    ASSERT_TRUE(
        run_until(m_loop, [&] { return sink->counters().bytes_written >= static_cast<uint64_t>(pipe_capacity); }));
    // The pipe is full; the loop has nothing to do until someone reads.
    EXPECT_EQ(MUST(m_loop.run_once(50ms)), 0);
    EXPECT_EQ(sink->counters().bytes_written, static_cast<uint64_t>(pipe_capacity));
    std::string received;
    ASSERT_TRUE(run_until(m_loop, [&] {
        received += read_available(pipe.read_end.get());
        return received.size() >= expected.size();
    }));
    EXPECT_EQ(received, expected);
    EXPECT_EQ(sink->counters().bytes_dropped, 0u);
    // Drained: the pipe fd is parked again, so a writable pipe does not keep waking the loop.
    EXPECT_EQ(MUST(m_loop.run_once(20ms)), 0);
}

TEST_F(BufferedSinkTest, WakesTheLoopOnlyWhenTheBufferStopsBeingEmpty) {
    auto pipe = make_pipe();
    auto const before = open_fds();
    auto sink = MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe"));
    int wake_fd = -1;
    for (int fd : open_fds())
        if (!before.contains(fd) && fd_target(fd) == "anon_inode:[eventfd]")
            wake_fd = fd;
    ASSERT_GE(wake_fd, 0);
    auto const wake_count = [&] {
        std::ifstream info("/proc/self/fdinfo/" + std::to_string(wake_fd));
        std::string line;
        while (std::getline(info, line))
            if (line.rfind("eventfd-count:", 0) == 0)
                return std::strtoull(line.c_str() + 14, nullptr, 16);
        return ~0ull;
    };
    auto writer = sink->make_writer();
    for (char byte : std::string("one byte at a time, like a UART"))
        writer->write(bytes_of(std::string_view(&byte, 1)));
    EXPECT_EQ(wake_count(), 1u);
    ASSERT_TRUE(run_until(m_loop, [&] { return sink->counters().bytes_written == 31; }));
    EXPECT_EQ(wake_count(), 0u);
    writer->write(bytes_of("!"));
    EXPECT_EQ(wake_count(), 1u);
}

TEST_F(BufferedSinkTest, FlushGivesUpAtItsDeadlineWhenNobodyReads) {
    auto pipe = make_pipe(4096);
    int const pipe_capacity = ::fcntl(pipe.write_end.get(), F_GETPIPE_SZ);
    auto sink = MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe"));
    auto writer = sink->make_writer();
    auto const text = numbered(static_cast<size_t>(pipe_capacity) * 3);
    writer->write(bytes_of(text));
    auto const start = std::chrono::steady_clock::now();
    sink->flush(100ms);
    auto const elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_GE(elapsed, 100ms);
    EXPECT_LT(elapsed, 2s) << "the flush waited for a reader that never came";
    EXPECT_EQ(sink->counters().bytes_written, static_cast<uint64_t>(pipe_capacity));
    EXPECT_EQ(sink->counters().bytes_dropped, text.size() - static_cast<size_t>(pipe_capacity));
    // Closed: later output is dropped and counted, and the loop no longer watches anything.
    writer->write(bytes_of("after"));
    EXPECT_EQ(sink->counters().bytes_dropped, text.size() - static_cast<size_t>(pipe_capacity) + 5);
    EXPECT_EQ(MUST(m_loop.run_once(20ms)), 0);
    EXPECT_EQ(read_available(pipe.read_end.get()), text.substr(0, static_cast<size_t>(pipe_capacity)));
}

TEST_F(BufferedSinkTest, FlushWritesEverythingQueuedWhileTheReaderKeepsUp) {
    auto pipe = make_pipe(4096);
    auto sink = MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe"));
    auto writer = sink->make_writer();
    auto const text = numbered(100 * 1024);
    writer->write(bytes_of(text));
    auto reader = std::async(std::launch::async, [fd = pipe.read_end.get(), size = text.size()] {
        std::string received;
        char buffer[4096];
        while (received.size() < size) {
            ssize_t const got = ::read(fd, buffer, sizeof(buffer));
            if (got <= 0)
                break;
            received.append(buffer, static_cast<size_t>(got));
        }
        return received;
    });
    sink->flush(5s);
    ASSERT_EQ(reader.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(reader.get(), text);
    EXPECT_EQ(sink->counters().bytes_dropped, 0u);
}

TEST_F(BufferedSinkTest, TheWriterNeverBlocksOnAPipeNobodyReads) {
    auto pipe = make_pipe(4096);
    auto sink = MUST(
        BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe", 64 * 1024));
    auto writer = sink->make_writer();
    constexpr size_t TOTAL = 8 * 1024 * 1024;
    auto producer = std::async(std::launch::async, [&] {
        std::string const chunk = numbered(4096);
        for (size_t done = 0; done < TOTAL; done += chunk.size())
            writer->write(bytes_of(chunk));
    });
    // The loop runs meanwhile, as in kvmm, and fills the pipe; nobody ever reads it.
    auto const deadline = std::chrono::steady_clock::now() + 20s;
    while (producer.wait_for(0s) != std::future_status::ready && std::chrono::steady_clock::now() < deadline)
        (void)m_loop.run_once(1ms);
    ASSERT_EQ(producer.wait_for(0s), std::future_status::ready) << "the writer blocked";
    // The producer may finish before the loop has filled the pipe (a loaded host): let it.
    auto const pipe_size = static_cast<uint64_t>(::fcntl(pipe.write_end.get(), F_GETPIPE_SZ));
    EXPECT_TRUE(run_until(m_loop, [&] { return sink->counters().bytes_written >= pipe_size; }));
    auto const counters = sink->counters();
    EXPECT_EQ(counters.bytes_written, pipe_size);
    EXPECT_GT(counters.bytes_dropped, TOTAL - 64 * 1024 - counters.bytes_written - 1);
    sink->flush(10ms);
    EXPECT_EQ(sink->counters().bytes_written + sink->counters().bytes_dropped, TOTAL);
}

TEST_F(BufferedSinkTest, AReaderThatLeavesEndsTheOutputWithoutSigpipe) {
    auto pipe = make_pipe();
    auto sink = MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe"));
    auto writer = sink->make_writer();
    pipe.read_end = UniqueFd();
    writer->write(bytes_of("nobody hears this")); // SIGPIPE's default action would end the test here
    ASSERT_TRUE(run_until(m_loop, [&] { return sink->counters().bytes_dropped == 17; }));
    sigset_t pending;
    sigpending(&pending);
    EXPECT_FALSE(sigismember(&pending, SIGPIPE)) << "a blocked SIGPIPE was left behind";
    writer->write(bytes_of("nor this"));
    EXPECT_EQ(sink->counters().bytes_dropped, 25u);
    EXPECT_EQ(sink->counters().bytes_written, 0u);
    EXPECT_EQ(MUST(m_loop.run_once(20ms)), 0) << "a broken pipe must not keep the loop busy";
}

TEST_F(BufferedSinkTest, AnInheritedPipeWithoutReaderDropsOutputWithoutSigpipe) {
    auto pipe = make_pipe();
    pipe.read_end = UniqueFd();
    auto sink = MUST(BufferedSink::create(m_loop, pipe.write_end.get(), BufferedSink::Description::Inherited, "pipe"));
    auto writer = sink->make_writer();
    writer->write(bytes_of("lost"));
    ASSERT_TRUE(run_until(m_loop, [&] { return sink->counters().bytes_dropped == 4; }));
    writer->write(bytes_of("lost too"));
    EXPECT_EQ(sink->counters().bytes_dropped, 12u);
    EXPECT_EQ(MUST(m_loop.run_once(20ms)), 0);
}

TEST_F(BufferedSinkTest, ASocketIsWrittenWithPerCallFlagsAndKeepsItsDescriptionBlocking) {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    UniqueFd ours(pair[0]), peer(pair[1]);
    int const send_buffer = 4096;
    ASSERT_EQ(::setsockopt(ours.get(), SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof(send_buffer)), 0);
    auto sink =
        MUST(BufferedSink::create(m_loop, ours.get(), BufferedSink::Description::Inherited, "socket", 256 * 1024));
    EXPECT_EQ(sink->kind(), BufferedSink::Kind::Socket);
    EXPECT_FALSE(::fcntl(ours.get(), F_GETFL) & O_NONBLOCK);
    auto writer = sink->make_writer();
    auto const text = numbered(200 * 1024);
    writer->write(bytes_of(text));
    // The peer does not read yet: the loop fills the socket and then waits, without blocking.
    auto const start = std::chrono::steady_clock::now();
    for (int round = 0; round < 20; ++round)
        (void)m_loop.run_once(5ms);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
    EXPECT_LT(sink->counters().bytes_written, text.size());
    std::string received;
    ASSERT_TRUE(run_until(m_loop, [&] {
        received += read_available(peer.get());
        return received.size() >= text.size();
    }));
    EXPECT_EQ(received, text);
    peer = UniqueFd();
    writer->write(bytes_of("gone"));
    ASSERT_TRUE(run_until(m_loop, [&] { return sink->counters().bytes_dropped == 4; }));
}

TEST_F(BufferedSinkTest, ARegularFileGetsEverythingInSlicesOfTheLoop) {
    std::string const path = temporary_path("file");
    auto fd = MUST(open_console_file(path));
    int const raw_fd = fd.release();
    auto sink = MUST(BufferedSink::create(m_loop, raw_fd, BufferedSink::Description::Private, path));
    EXPECT_EQ(sink->kind(), BufferedSink::Kind::File);
    auto writer = sink->make_writer();
    auto const text = numbered(BufferedSink::SLICE * 3 + 100);
    writer->write(bytes_of(text));
    // One wake-up writes one slice and hands the loop back; the rest follows on later turns.
    EXPECT_EQ(MUST(m_loop.run_once(1s)), 1);
    EXPECT_EQ(sink->counters().bytes_written, BufferedSink::SLICE);
    ASSERT_TRUE(run_until(m_loop, [&] { return sink->counters().bytes_written == text.size(); }));
    EXPECT_EQ(contents_of(path), text);
    sink.reset();
    ::unlink(path.c_str());
}

TEST_F(BufferedSinkTest, AConsoleFileRotatesToDot1AtItsLimitSoItNeverGrowsWithoutBound) {
    std::string const path = temporary_path("rotating");
    std::string const previous = path + ".1";
    ::unlink(previous.c_str());
    constexpr uint64_t LIMIT = 1000;
    auto sink = MUST(BufferedSink::create_console_file(m_loop, path, LIMIT));
    auto writer = sink->make_writer();
    // 3.5 limits' worth in lines: the newest output is in PATH, the one before in PATH.1.
    std::string all;
    for (int i = 0; all.size() < LIMIT * 7 / 2; ++i)
        all += fmt::format("line {:04}\n", i);
    for (size_t offset = 0; offset < all.size(); offset += 100) {
        writer->write(bytes_of(std::string_view(all).substr(offset, 100)));
        ASSERT_TRUE(
            run_until(m_loop, [&] { return sink->counters().bytes_written == std::min(all.size(), offset + 100); }));
    }
    sink.reset();
    auto const current = contents_of(path);
    auto const older = contents_of(previous);
    EXPECT_LE(current.size(), LIMIT);
    EXPECT_EQ(older.size(), LIMIT);
    EXPECT_EQ(older + current, all.substr(all.size() - older.size() - current.size())) << "nothing reordered or lost "
                                                                                          "in the last two files";
    for (auto const& file : { path, previous }) {
        struct stat status {};
        ASSERT_EQ(::stat(file.c_str(), &status), 0);
        EXPECT_EQ(status.st_mode & 07777, 0600u) << file;
    }
    ::unlink(path.c_str());
    ::unlink(previous.c_str());
}

TEST_F(BufferedSinkTest, OneWriteLargerThanTheLimitIsSplitAcrossFiles) {
    std::string const path = temporary_path("rotating-large");
    std::string const previous = path + ".1";
    auto sink = MUST(BufferedSink::create_console_file(m_loop, path, 100));
    auto writer = sink->make_writer();
    auto const text = numbered(250);
    writer->write(bytes_of(text));
    ASSERT_TRUE(run_until(m_loop, [&] { return sink->counters().bytes_written == text.size(); }));
    sink.reset();
    EXPECT_EQ(contents_of(previous), text.substr(100, 100));
    EXPECT_EQ(contents_of(path), text.substr(200));
    ::unlink(path.c_str());
    ::unlink(previous.c_str());
}

TEST_F(BufferedSinkTest, TheDestructorFlushesWhatIsQueued) {
    std::string const path = temporary_path("destructor");
    auto fd = MUST(open_console_file(path));
    auto sink = MUST(BufferedSink::create(m_loop, fd.release(), BufferedSink::Description::Private, path));
    auto writer = sink->make_writer();
    writer->write(bytes_of("last words\n"));
    sink.reset();
    EXPECT_EQ(contents_of(path), "last words\n");
    writer->write(bytes_of("after the end")); // harmless: dropped
    ::unlink(path.c_str());
}

TEST_F(BufferedSinkTest, APrivatePipeIsMadeNonBlockingInPlace) {
    auto pipe = make_pipe(4096);
    int const write_fd = pipe.write_end.release();
    auto sink = MUST(BufferedSink::create(m_loop, write_fd, BufferedSink::Description::Private, "fifo"));
    EXPECT_EQ(sink->kind(), BufferedSink::Kind::Stream);
    EXPECT_TRUE(::fcntl(write_fd, F_GETFL) & O_NONBLOCK);
    auto writer = sink->make_writer();
    writer->write(bytes_of(numbered(64 * 1024)));
    auto const start = std::chrono::steady_clock::now();
    sink->flush(50ms);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
    EXPECT_GT(sink->counters().bytes_dropped, 0u);
}

} // namespace
} // namespace kvmm

// Per-VM output of the manager:
//   RotatingLog: an append-only log file (the VM's console and kvmm's stderr) that is
//     rotated by size: NAME.log -> NAME.log.1 -> ... -> NAME.log.KEEP (the oldest is dropped),
//     so a chatty guest cannot fill the host's disk.
//   Scrollback: the last `capacity` bytes of console output in memory (the daemon's "console"
//     answer carries it; kvmmctl itself shows what kvmm replays on attaching).
//
// Threading: neither class locks; each is owned by the thread that pumps the VM's console.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm {

inline constexpr uint64_t DEFAULT_LOG_MAX_BYTES = 1024 * 1024;
inline constexpr unsigned DEFAULT_LOG_KEEP = 3;

class RotatingLog {
public:
    // Opens (creating, mode 0600) `path` for appending. `max_bytes` >= 1; `keep` rotated files
    // are kept (0: the log is truncated instead of rotated).
    static Expected<RotatingLog> open(std::filesystem::path path, uint64_t max_bytes = DEFAULT_LOG_MAX_BYTES,
                                      unsigned keep = DEFAULT_LOG_KEEP);

    // Appends `data`; rotates first when it would take the file past max_bytes (a single write
    // larger than max_bytes goes into a fresh file of its own, split as needed).
    Expected<void> write(std::span<char const> data);

    std::filesystem::path const& path() const { return m_path; }
    uint64_t size() const { return m_size; }

private:
    RotatingLog(std::filesystem::path path, UniqueFd fd, uint64_t size, uint64_t max_bytes, unsigned keep)
        : m_path(std::move(path)), m_fd(std::move(fd)), m_size(size), m_max_bytes(max_bytes), m_keep(keep) {}

    Expected<void> rotate();

    std::filesystem::path m_path;
    UniqueFd m_fd;
    uint64_t m_size { 0 };
    uint64_t m_max_bytes { DEFAULT_LOG_MAX_BYTES };
    unsigned m_keep { DEFAULT_LOG_KEEP };
};

inline constexpr size_t DEFAULT_SCROLLBACK_CAPACITY = 64 * 1024;

class Scrollback {
public:
    explicit Scrollback(size_t capacity = DEFAULT_SCROLLBACK_CAPACITY);

    // Keeps the newest `capacity` bytes of everything appended.
    void append(std::span<char const> data);
    // The retained bytes, oldest first.
    std::string contents() const;
    size_t size() const { return m_size; }
    size_t capacity() const { return m_buffer.size(); }
    void clear();

private:
    std::vector<char> m_buffer;
    size_t m_start { 0 }; // index of the oldest byte
    size_t m_size { 0 };
};

// Where the console log resumes when kvmmd re-attaches to a kvmm that kept running: kvmm
// first replays its recent output (`history`), part of which the log already holds; the log
// ends with `logged_tail`. Returns how many leading bytes of `history` are already logged: up
// to the end of the last occurrence of `logged_tail` in `history`, else the longest prefix of
// `history` that `logged_tail` ends with, else 0 (all of `history` is new). A tail that recurs
// in the missed output itself can make this skip some of it; a tail of a few hundred bytes
// makes that unlikely outside output that repeats itself exactly.
size_t already_logged(std::string_view logged_tail, std::string_view history);

// The last `count` bytes of the file at `path` (all of it if shorter; empty if unreadable).
std::string read_file_tail(std::filesystem::path const& path, size_t count);

} // namespace kvmm

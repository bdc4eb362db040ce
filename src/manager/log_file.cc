#include "manager/log_file.h"

#include "base/file.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace kvmm {

namespace {

namespace fs = std::filesystem;

fs::path numbered(fs::path const& path, unsigned number) {
    fs::path result = path;
    result += fmt::format(".{}", number);
    return result;
}

Expected<UniqueFd> open_for_append(fs::path const& path) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("open log {}", path.string()));
    return fd;
}

} // namespace

Expected<RotatingLog> RotatingLog::open(fs::path path, uint64_t max_bytes, unsigned keep) {
    if (max_bytes == 0)
        return Error::format("log {}: maximum size 0 cannot hold anything", path.string());
    auto fd = TRY(open_for_append(path));
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("stat log {}", path.string()));
    return RotatingLog(std::move(path), std::move(fd), static_cast<uint64_t>(status.st_size), max_bytes, keep);
}

Expected<void> RotatingLog::rotate() {
    m_fd.reset();
    if (m_keep == 0) {
        if (::truncate(m_path.c_str(), 0) != 0 && errno != ENOENT)
            return Error::from_errno(fmt::format("truncate log {}", m_path.string()));
    } else {
        // Oldest first, so that no file is overwritten before it has moved on: .KEEP-1 -> .KEEP, ..., log -> .1.
        for (unsigned number = m_keep; number >= 1; --number) {
            auto const from = number == 1 ? m_path : numbered(m_path, number - 1);
            auto const to = numbered(m_path, number);
            if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT)
                return Error::from_errno(fmt::format("rotate log {} to {}", from.string(), to.string()));
        }
    }
    m_fd = TRY(open_for_append(m_path));
    m_size = 0;
    return {};
}

Expected<void> RotatingLog::write(std::span<char const> data) {
    while (!data.empty()) {
        if (!m_fd.is_valid()) // a failed rotation left no file open; try again
            m_fd = TRY(open_for_append(m_path));
        if (m_size >= m_max_bytes || (m_size > 0 && data.size() > m_max_bytes - m_size))
            TRY(rotate());
        size_t const chunk = static_cast<size_t>(std::min<uint64_t>(data.size(), m_max_bytes - m_size));
        ssize_t const written = ::write(m_fd.get(), data.data(), chunk);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno(fmt::format("write log {}", m_path.string()));
        }
        m_size += static_cast<uint64_t>(written);
        data = data.subspan(static_cast<size_t>(written));
    }
    return {};
}

Scrollback::Scrollback(size_t capacity) : m_buffer(capacity) {}

void Scrollback::append(std::span<char const> data) {
    size_t const capacity = m_buffer.size();
    if (capacity == 0)
        return;
    if (data.size() >= capacity) {
        // Only the newest `capacity` bytes survive.
        std::memcpy(m_buffer.data(), data.data() + data.size() - capacity, capacity);
        m_start = 0;
        m_size = capacity;
        return;
    }
    size_t const end = (m_start + m_size) % capacity;
    size_t const first = std::min(data.size(), capacity - end);
    std::memcpy(m_buffer.data() + end, data.data(), first);
    std::memcpy(m_buffer.data(), data.data() + first, data.size() - first);
    size_t const total = m_size + data.size();
    if (total > capacity) {
        m_start = (m_start + (total - capacity)) % capacity;
        m_size = capacity;
    } else {
        m_size = total;
    }
}

std::string Scrollback::contents() const {
    std::string text;
    text.reserve(m_size);
    size_t const capacity = m_buffer.size();
    size_t const first = std::min(m_size, capacity - m_start);
    text.append(m_buffer.data() + m_start, first);
    text.append(m_buffer.data(), m_size - first);
    return text;
}

void Scrollback::clear() {
    m_start = 0;
    m_size = 0;
}

size_t already_logged(std::string_view logged_tail, std::string_view history) {
    if (logged_tail.empty() || history.empty())
        return 0;
    if (auto const found = history.rfind(logged_tail); found != std::string_view::npos)
        return found + logged_tail.size();
    for (size_t length = std::min(logged_tail.size(), history.size()); length > 0; --length) {
        if (logged_tail.ends_with(history.substr(0, length)))
            return length;
    }
    return 0;
}

std::string read_file_tail(std::filesystem::path const& path, size_t count) {
    // O_NOFOLLOW: a link planted at a log's name must not show another file to kvmmctl logs.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    struct stat status {};
    if (!fd.is_valid() || ::fstat(fd.get(), &status) != 0 || !S_ISREG(status.st_mode))
        return {};
    auto const size = static_cast<uint64_t>(status.st_size);
    uint64_t const start = size > count ? size - count : 0;
    std::string tail(static_cast<size_t>(size - start), '\0');
    ssize_t const got = ::pread(fd.get(), tail.data(), tail.size(), static_cast<off_t>(start));
    tail.resize(got > 0 ? static_cast<size_t>(got) : 0);
    return tail;
}

} // namespace kvmm

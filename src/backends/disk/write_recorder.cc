#include "backends/disk/write_recorder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace kvmm {

namespace {

// Writes all of `vectors` (modified: consumed entries are advanced), IOV_MAX at a time,
// continuing short writes. Returns 0 or an errno.
int write_all(int fd, std::span<iovec> vectors) {
    while (!vectors.empty()) {
        if (vectors.front().iov_len == 0) {
            vectors = vectors.subspan(1);
            continue;
        }
        size_t const count = std::min<size_t>(vectors.size(), IOV_MAX);
        ssize_t written = ::writev(fd, vectors.data(), static_cast<int>(count));
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (written == 0)
            return EIO;
        auto remaining = static_cast<size_t>(written);
        while (remaining > 0 && !vectors.empty()) {
            size_t const step = std::min(remaining, vectors.front().iov_len);
            vectors.front().iov_base = static_cast<char*>(vectors.front().iov_base) + step;
            vectors.front().iov_len -= step;
            remaining -= step;
            if (vectors.front().iov_len == 0)
                vectors = vectors.subspan(1);
        }
    }
    return 0;
}

} // namespace

Expected<std::unique_ptr<WriteRecorder>> WriteRecorder::create(std::string const& path, uint64_t capacity_sectors) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST) {
        // Not a file we would overwrite: a FIFO (a reader streams the recording) or a device.
        struct stat status {};
        if (::stat(path.c_str(), &status) == 0 && !S_ISREG(status.st_mode) && !S_ISDIR(status.st_mode))
            fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        else
            return Error::format("write recording {} exists; it is not overwritten", path);
    }
    if (fd < 0)
        return Error::from_errno(fmt::format("creating the write recording {}", path));
    return create_on(UniqueFd(fd), path, capacity_sectors);
}

Expected<std::unique_ptr<WriteRecorder>> WriteRecorder::create_on(UniqueFd fd, std::string name,
                                                                  uint64_t capacity_sectors) {
    auto header = encode_write_log_header(WriteLogHeader { capacity_sectors });
    iovec vector { header.data(), header.size() };
    if (int const error = write_all(fd.get(), std::span(&vector, 1)); error != 0)
        return Error::from_errno(fmt::format("writing the header of the write recording {}", name), error);
    auto recorder = std::unique_ptr<WriteRecorder>(new WriteRecorder(std::move(fd), std::move(name)));
    recorder->m_vectors.reserve(64);
    return recorder;
}

void WriteRecorder::record_write(uint64_t offset, std::span<iovec const> data) {
    uint64_t length = 0;
    uint32_t crc = 0;
    for (auto const& vector : data) {
        length += vector.iov_len;
        crc = write_log_crc32(std::span(static_cast<std::byte const*>(vector.iov_base), vector.iov_len), crc);
    }
    append(WriteLogRecord { m_next_sequence, WriteLogRecordType::Write, offset / WRITE_LOG_SECTOR_SIZE, length, 0, {} },
           data, crc);
}

void WriteRecorder::record_range(WriteLogRecordType type, uint64_t offset, uint64_t length) {
    append(WriteLogRecord { m_next_sequence, type, offset / WRITE_LOG_SECTOR_SIZE, length, 0, {} }, {}, 0);
}

void WriteRecorder::record_flush(uint64_t covers) {
    append(WriteLogRecord { m_next_sequence, WriteLogRecordType::Flush, 0, 0, std::min(covers, m_next_sequence), {} },
           {}, 0);
}

void WriteRecorder::stop(std::string_view reason) {
    if (m_stopped)
        return;
    m_stopped = true;
    spdlog::error("write recording {}: {}; recording stopped after {} records", m_name, reason, m_next_sequence);
}

void WriteRecorder::append(WriteLogRecord const& record, std::span<iovec const> data, uint32_t data_crc) {
    if (m_stopped)
        return;
    auto header = encode_write_log_record(record, data_crc);
    m_vectors.clear();
    m_vectors.push_back(iovec { header.data(), header.size() });
    m_vectors.insert(m_vectors.end(), data.begin(), data.end());
    if (int const error = write_all(m_fd.get(), m_vectors); error != 0) {
        stop(fmt::format("appending {} record {} failed: {}", write_log_record_type_name(record.type), record.sequence,
                         std::strerror(error)));
        return;
    }
    ++m_next_sequence;
}

} // namespace kvmm

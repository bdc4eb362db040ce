// WriteRecorder: appends a virtio-blk drive's completed writes, discards, write-zeroes and
// flushes to a recording file (format: write_log_format.h), for the crash-state checker
// (kvmm-crash-check). Test and debugging use; a drive records only with --disk ...,record=PATH.
//
// Each record is written with writev straight from the request's buffers (guest memory, which
// the guest may not reuse before it sees the completion), so recording needs no copy and its
// memory is bounded by one iovec array. The appends are ordinary writes to the page cache:
// a killed kvmm leaves every record it appended; a host power loss is not what the recording
// is for.
//
// Errors: the first failed append is logged once (naming the file and the reason), recording
// stops, and later calls do nothing; the drive keeps working. The file then ends after the last
// complete record or in a cut-off one, which parse_write_log tolerates.
//
// Threading: one thread (the drive's event loop) makes every call.
#pragma once

#include "backends/disk/write_log_format.h"
#include "base/expected.h"
#include "base/unique_fd.h"

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kvmm {

class WriteRecorder {
public:
    // Creates `path` (never overwriting a regular file that exists: the error names it) and
    // writes the file header. An existing FIFO or character device is opened for writing.
    static Expected<std::unique_ptr<WriteRecorder>> create(std::string const& path, uint64_t capacity_sectors);
    // Records to an open descriptor (tests: a pipe, /dev/full); `name` is for messages.
    static Expected<std::unique_ptr<WriteRecorder>> create_on(UniqueFd fd, std::string name, uint64_t capacity_sectors);

    // `offset` and the lengths are the request's (bytes, sector multiples, checked by the device).
    void record_write(uint64_t offset, std::span<iovec const> data);
    void record_range(WriteLogRecordType type, uint64_t offset, uint64_t length);
    // A flush that made durable every record with a sequence below `covers`.
    void record_flush(uint64_t covers);
    // Stops recording with a message (e.g. the drive moved to another image).
    void stop(std::string_view reason);

    // The sequence the next record gets (= records appended so far).
    uint64_t next_sequence() const { return m_next_sequence; }
    bool stopped() const { return m_stopped; }
    std::string const& name() const { return m_name; }

private:
    WriteRecorder(UniqueFd fd, std::string name) : m_fd(std::move(fd)), m_name(std::move(name)) {}
    void append(WriteLogRecord const& record, std::span<iovec const> data, uint32_t data_crc);

    UniqueFd m_fd;
    std::string m_name;
    uint64_t m_next_sequence { 0 };
    bool m_stopped { false };
    std::vector<iovec> m_vectors; // header + data, reused
};

} // namespace kvmm

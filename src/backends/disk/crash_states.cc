#include "backends/disk/crash_states.h"

#include "base/unique_fd.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <set>

namespace kvmm {

namespace {

constexpr uint64_t SECTOR = WRITE_LOG_SECTOR_SIZE;

template <typename T>
T load(std::byte const* at) {
    T value;
    std::memcpy(&value, at, sizeof(T));
    return value;
}

bool is_data_record(WriteLogRecord const& record) { return record.type != WriteLogRecordType::Flush; }

// The acknowledged record number in one sector, or 0.
uint64_t ack_in_sector(std::span<std::byte const> sector) {
    if (std::memcmp(sector.data(), CRASH_ACK_MAGIC, sizeof(CRASH_ACK_MAGIC)) != 0)
        return 0;
    if (load<uint32_t>(sector.data() + 16) != write_log_crc32(sector.first(16)))
        return 0;
    return load<uint64_t>(sector.data() + 8);
}

// acknowledged[c]: the highest record number acknowledged by writes among the first c records.
std::vector<uint64_t> acknowledged_by_cut(ParsedWriteLog const& log) {
    std::vector<uint64_t> acknowledged(log.records.size() + 1, 0);
    uint64_t highest = 0;
    for (size_t i = 0; i < log.records.size(); ++i) {
        auto const& record = log.records[i];
        if (record.type == WriteLogRecordType::Write)
            for (size_t offset = 0; offset + SECTOR <= record.data.size(); offset += SECTOR)
                highest = std::max(highest, ack_in_sector(record.data.subspan(offset, SECTOR)));
        acknowledged[i + 1] = highest;
    }
    return acknowledged;
}

// durable[c]: records below this survive a power loss after the first c records.
std::vector<uint64_t> durable_by_cut(ParsedWriteLog const& log) {
    std::vector<uint64_t> durable(log.records.size() + 1, 0);
    uint64_t covered = 0;
    for (size_t i = 0; i < log.records.size(); ++i) {
        if (log.records[i].type == WriteLogRecordType::Flush)
            covered = std::max(covered, log.records[i].flush_covers);
        durable[i + 1] = covered;
    }
    return durable;
}

Expected<void> copy_file(int from, int to, uint64_t size, std::string const& what) {
    uint64_t done = 0;
    while (done < size) {
        loff_t in = static_cast<loff_t>(done), out = static_cast<loff_t>(done);
        ssize_t const copied = ::copy_file_range(from, &in, to, &out, size - done, 0);
        if (copied > 0) {
            done += static_cast<uint64_t>(copied);
            continue;
        }
        if (copied < 0 && errno == EINTR)
            continue;
        if (copied < 0 && errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
            return Error::from_errno(fmt::format("copying {}", what));
        // Another file system type or no support: copy through a buffer.
        std::vector<char> buffer(1 << 20);
        while (done < size) {
            ssize_t const got =
                ::pread(from, buffer.data(), std::min<uint64_t>(buffer.size(), size - done), static_cast<off_t>(done));
            if (got <= 0)
                return got < 0 ? Error::from_errno(fmt::format("reading {}", what))
                               : Error::format("{} ended at {} of {} bytes", what, done, size);
            if (::pwrite(to, buffer.data(), static_cast<size_t>(got), static_cast<off_t>(done)) != got)
                return Error::from_errno(fmt::format("writing the copy of {}", what));
            done += static_cast<uint64_t>(got);
        }
    }
    return {};
}

// A temporary file in `directory`, unlinked when it goes.
class ScratchFile {
public:
    static Expected<ScratchFile> create(std::string const& directory, std::string_view name) {
        std::string path = fmt::format("{}/kvmm-crash-{}-XXXXXX", directory, name);
        int const fd = ::mkstemp(path.data());
        if (fd < 0)
            return Error::from_errno(fmt::format("creating a scratch file in {}", directory));
        return ScratchFile(UniqueFd(fd), std::move(path));
    }
    ScratchFile(ScratchFile&& other) noexcept
        : m_fd(std::move(other.m_fd)), m_path(std::exchange(other.m_path, std::string())) {}
    ScratchFile& operator=(ScratchFile&&) = delete;
    ~ScratchFile() {
        if (!m_path.empty())
            ::unlink(m_path.c_str());
    }
    int fd() const { return m_fd.get(); }
    std::string const& path() const { return m_path; }

private:
    ScratchFile(UniqueFd fd, std::string path) : m_fd(std::move(fd)), m_path(std::move(path)) {}
    UniqueFd m_fd;
    std::string m_path;
};

class Mapping {
public:
    Mapping(std::byte* address, size_t size) : m_address(address), m_size(size) {}
    ~Mapping() {
        if (m_address != nullptr)
            ::munmap(m_address, m_size);
    }
    Mapping(Mapping const&) = delete;
    Mapping& operator=(Mapping const&) = delete;
    std::span<std::byte> bytes() const { return { m_address, m_size }; }

private:
    std::byte* m_address;
    size_t m_size;
};

void apply(std::span<std::byte> image, WriteLogRecord const& record) {
    auto target = image.subspan(record.sector * SECTOR, record.length);
    if (record.type == WriteLogRecordType::Write)
        std::memcpy(target.data(), record.data.data(), record.length);
    else
        std::memset(target.data(), 0, record.length);
}

} // namespace

std::vector<std::byte> encode_crash_record(uint64_t number, std::span<std::byte const> payload) {
    std::vector<std::byte> out(CRASH_RECORD_HEADER_SIZE + payload.size());
    std::memcpy(out.data(), CRASH_RECORD_MAGIC, sizeof(CRASH_RECORD_MAGIC));
    std::memcpy(out.data() + 8, &number, 8);
    auto const length = static_cast<uint32_t>(payload.size());
    std::memcpy(out.data() + 16, &length, 4);
    uint32_t const crc = write_log_crc32(payload);
    std::memcpy(out.data() + 20, &crc, 4);
    std::memcpy(out.data() + CRASH_RECORD_HEADER_SIZE, payload.data(), payload.size());
    out.resize((out.size() + SECTOR - 1) / SECTOR * SECTOR);
    return out;
}

std::vector<std::byte> encode_crash_ack(uint64_t number) {
    std::vector<std::byte> out(SECTOR);
    std::memcpy(out.data(), CRASH_ACK_MAGIC, sizeof(CRASH_ACK_MAGIC));
    std::memcpy(out.data() + 8, &number, 8);
    uint32_t const crc = write_log_crc32(std::span(out).first(16));
    std::memcpy(out.data() + 16, &crc, 4);
    return out;
}

std::vector<uint64_t> missing_crash_records(std::span<std::byte const> image, uint64_t acknowledged, size_t limit) {
    if (acknowledged == 0)
        return {};
    std::vector<bool> present(acknowledged + 1, false);
    for (size_t offset = 0; offset + CRASH_RECORD_HEADER_SIZE <= image.size(); offset += SECTOR) {
        std::byte const* at = image.data() + offset;
        if (std::memcmp(at, CRASH_RECORD_MAGIC, sizeof(CRASH_RECORD_MAGIC)) != 0)
            continue;
        uint64_t const number = load<uint64_t>(at + 8);
        uint32_t const length = load<uint32_t>(at + 16);
        if (number == 0 || number > acknowledged || present[number])
            continue;
        if (length > image.size() - offset - CRASH_RECORD_HEADER_SIZE)
            continue;
        auto const payload = image.subspan(offset + CRASH_RECORD_HEADER_SIZE, length);
        if (write_log_crc32(payload) == load<uint32_t>(at + 20))
            present[number] = true;
    }
    std::vector<uint64_t> missing;
    for (uint64_t number = 1; number <= acknowledged && missing.size() < limit; ++number)
        if (!present[number])
            missing.push_back(number);
    return missing;
}

std::string describe_crash_state(CrashState const& state) {
    std::string maybes;
    for (size_t i = 0; i < state.maybes.size() && i < 12; ++i)
        maybes += fmt::format("{}{}", i == 0 ? "" : ",", state.maybes[i]);
    if (state.maybes.size() > 12)
        maybes += fmt::format(",... ({} in all)", state.maybes.size());
    return fmt::format("{}: power lost after {} records, records below {} durable, also present: [{}]", state.kind,
                       state.cut, state.durable, maybes);
}

std::vector<CrashState> plan_crash_states(ParsedWriteLog const& log, CrashCheckOptions const& options) {
    auto const& records = log.records;
    auto const durable = durable_by_cut(log);
    std::mt19937_64 random(options.seed);
    std::vector<CrashState> states;
    auto not_durable = [&](uint64_t cut) {
        std::vector<uint64_t> indices;
        for (uint64_t i = durable[cut]; i < cut; ++i)
            if (is_data_record(records[i]))
                indices.push_back(i);
        return indices;
    };
    // Interval ends: every flush point, and the end of the recording.
    std::vector<uint64_t> ends;
    for (uint64_t i = 0; i < records.size(); ++i)
        if (records[i].type == WriteLogRecordType::Flush)
            ends.push_back(i + 1);
    if (ends.empty() || ends.back() != records.size())
        ends.push_back(records.size());
    uint64_t start = 0;
    for (uint64_t const end : ends) {
        // Sampled cuts in (start, end), then the state at `end`.
        if (end > start + 1) {
            std::vector<uint64_t> cuts;
            for (unsigned i = 0; i < options.samples_per_interval; ++i)
                cuts.push_back(start + 1 + random() % (end - start - 1));
            std::sort(cuts.begin(), cuts.end());
            for (uint64_t const cut : cuts) {
                CrashState state { cut, durable[cut], {}, "sampled" };
                for (uint64_t const index : not_durable(cut))
                    if (random() & 1)
                        state.maybes.push_back(index);
                states.push_back(std::move(state));
            }
        }
        bool const flush_point = end > 0 && records[end - 1].type == WriteLogRecordType::Flush;
        auto const pending = not_durable(end);
        std::string const kind = flush_point ? "flush point" : "end of recording";
        if (!pending.empty())
            states.push_back(CrashState { end, durable[end], {}, kind + ", durable only" });
        states.push_back(CrashState { end, durable[end], pending, kind });
        start = end;
    }
    return states;
}

Expected<CrashCheckReport> check_crash_states(std::string const& base_image, ParsedWriteLog const& log,
                                              CrashCheckOptions const& options) {
    auto const capacity_bytes = log.header.capacity_sectors * SECTOR;
    UniqueFd base(::open(base_image.c_str(), O_RDONLY | O_CLOEXEC));
    if (!base.is_valid())
        return Error::from_errno(fmt::format("opening the base image {}", base_image));
    struct stat status {};
    if (::fstat(base.get(), &status) != 0)
        return Error::from_errno(fmt::format("stat of the base image {}", base_image));
    auto const size = static_cast<uint64_t>(status.st_size);
    if (size < capacity_bytes)
        return Error::format("base image {} is {} bytes, smaller than the recording's {} sectors", base_image, size,
                             log.header.capacity_sectors);
    if (size == 0)
        return Error::format("base image {} is empty", base_image);

    auto working = TRY(ScratchFile::create(options.work_directory, "image"));
    TRY(copy_file(base.get(), working.fd(), size, base_image));
    void* const address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, working.fd(), 0);
    if (address == MAP_FAILED)
        return Error::from_errno(fmt::format("mapping the working image {}", working.path()));
    Mapping mapping(static_cast<std::byte*>(address), size);
    auto const image = mapping.bytes();

    auto const acknowledged = acknowledged_by_cut(log);
    auto const states = plan_crash_states(log, options);
    CrashCheckReport report;
    report.records = log.records.size();
    for (auto const& record : log.records)
        report.flush_points += record.type == WriteLogRecordType::Flush ? 1 : 0;

    uint64_t applied = 0; // records [0, applied) are in the working image for good
    struct Undo {
        uint64_t offset;
        std::vector<std::byte> bytes;
    };
    std::vector<Undo> undo;
    for (auto const& state : states) {
        for (; applied < state.durable; ++applied)
            if (is_data_record(log.records[applied]))
                apply(image, log.records[applied]);
        undo.clear();
        for (uint64_t const index : state.maybes) {
            auto const& record = log.records[index];
            auto const old = image.subspan(record.sector * SECTOR, record.length);
            undo.push_back(Undo { record.sector * SECTOR, std::vector<std::byte>(old.begin(), old.end()) });
            apply(image, record);
        }
        ++report.states_checked;
        if (options.check_records) {
            auto const missing = missing_crash_records(image, acknowledged[state.cut]);
            if (!missing.empty())
                report.failures.push_back(CrashFailure {
                    state, fmt::format("{}{} of the {} acknowledged records missing or damaged, first: record {}",
                                       missing.size(), missing.size() >= 16 ? " or more" : "", acknowledged[state.cut],
                                       missing.front()) });
        }
        if (options.check_image) {
            auto copy = TRY(ScratchFile::create(options.work_directory, "state"));
            TRY(copy_file(working.fd(), copy.fd(), size, working.path()));
            if (auto checked = options.check_image(copy.path()); !checked)
                report.failures.push_back(CrashFailure { state, checked.error().message() });
        }
        for (auto it = undo.rbegin(); it != undo.rend(); ++it)
            std::memcpy(image.data() + it->offset, it->bytes.data(), it->bytes.size());
    }
    return report;
}

} // namespace kvmm

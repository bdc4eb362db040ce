#include "vmm/snapshot_file.h"

#include "base/file.h"
#include "base/state_io.h"
#include "base/unique_fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <random>
#include <utility>

namespace kvmm {

uint64_t SnapshotFile::memory_size() const {
    uint64_t total = 0;
    for (auto const& region : memory_layout)
        total += region.size;
    return total;
}

std::vector<std::byte> SnapshotFile::encode() const {
    StateWriter writer;
    writer.begin_section(SECTION, VERSION);
    writer.string(config_json);
    writer.u8(static_cast<uint8_t>(type));
    writer.u64(memory_layout.size());
    for (auto const& region : memory_layout) {
        writer.u64(region.start.value());
        writer.u64(region.size);
    }
    writer.bytes(machine_state);
    writer.end_section();
    return seal_state(writer.payload());
}

Expected<SnapshotFile> SnapshotFile::decode(std::span<std::byte const> bytes, std::string_view what) {
    auto decoded = [&]() -> Expected<SnapshotFile> {
        auto const payload = TRY(open_state(bytes));
        StateReader reader(payload);
        auto const version = TRY(reader.begin_section(SECTION, VERSION));
        if (version != VERSION)
            return Error::format("snapshot section version {} is older than the {} this kvmm reads; take the "
                                 "snapshot again",
                                 version, VERSION);
        SnapshotFile file;
        file.config_json = TRY(reader.string("config", MAX_CONFIG_BYTES));
        auto const saved_type = TRY(reader.u8("snapshot type"));
        if (saved_type > static_cast<uint8_t>(SnapshotType::Diff))
            return Error::format("snapshot type {} is neither Full (0) nor Diff (1)", saved_type);
        file.type = static_cast<SnapshotType>(saved_type);
        auto const regions = TRY(reader.u64_in_range("memory region count", 1, MAX_REGIONS));
        uint64_t total = 0;
        for (uint64_t index = 0; index < regions; ++index) {
            auto const start = TRY(reader.u64("memory region start"));
            auto const size = TRY(reader.u64("memory region size"));
            auto const end = checked_add(start, size);
            auto const sum = checked_add(total, size);
            if (size == 0 || size % 4096 != 0 || start % 4096 != 0 || !end || !sum)
                return Error::format("memory region {} ({:#x} bytes at {:#x}) is not a page-aligned range", index, size,
                                     start);
            if (!file.memory_layout.empty() &&
                start < file.memory_layout.back().start.offset(file.memory_layout.back().size).value())
                return Error::format("memory region {} at {:#x} overlaps or precedes the one before it", index, start);
            total = *sum;
            file.memory_layout.push_back(GuestRegionSpec { GuestAddress(start), size });
        }
        file.machine_state = TRY(reader.bytes("machine state", MAX_STATE_BYTES));
        TRY(reader.end_section());
        if (!reader.at_end())
            return Error("data after the snapshot section");
        return file;
    }();
    if (!decoded)
        return decoded.error().with_context(std::string(what));
    return decoded;
}

Expected<SnapshotFile> SnapshotFile::read(std::string const& path) {
    auto const what = fmt::format("snapshot file '{}'", path);
    auto const bytes = TRY(read_file(path, MAX_FILE_BYTES).with_context(what));
    return decode(bytes, what);
}

Expected<PendingFile> PendingFile::create(std::string path) {
    // Random, so that two writers of the same path never share a temporary file.
    std::random_device random;
    auto temporary = fmt::format("{}.partial-{:08x}", path, random());
    UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot create '{}'", temporary));
    return PendingFile(std::move(path), std::move(temporary), std::move(fd));
}

PendingFile::PendingFile(PendingFile&& other) noexcept
    : m_path(std::move(other.m_path)), m_temporary(std::exchange(other.m_temporary, {})), m_fd(std::move(other.m_fd)) {}

PendingFile::~PendingFile() {
    if (!m_temporary.empty())
        ::unlink(m_temporary.c_str());
}

Expected<void> PendingFile::commit() {
    if (m_temporary.empty())
        return Error::format("'{}' was already committed", m_path);
    if (::fsync(m_fd.get()) != 0)
        return Error::from_errno(fmt::format("syncing '{}'", m_temporary));
    if (::rename(m_temporary.c_str(), m_path.c_str()) != 0)
        return Error::from_errno(fmt::format("renaming '{}' to '{}'", m_temporary, m_path));
    m_temporary.clear();
    return {};
}

Expected<void> write_file_atomically(std::string const& path, std::function<Expected<void>(int fd)> const& write) {
    auto written = [&]() -> Expected<void> {
        auto file = TRY(PendingFile::create(path));
        TRY(write(file.fd()));
        return file.commit();
    }();
    if (!written)
        return written.error().with_context(fmt::format("writing '{}'", path));
    return {};
}

} // namespace kvmm

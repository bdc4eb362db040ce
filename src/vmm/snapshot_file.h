// SnapshotFile: what PUT /snapshot/create writes to snapshot_path and PUT /snapshot/load reads
// back - everything a fresh kvmm needs besides the memory file: the machine's configuration
// (Firecracker's JSON configuration document, as --config-file reads it; kept here as text so
// that this layer does not depend on the API's types), the guest memory layout the memory file
// follows (GuestMemory::write_to_file), and the machine state (Machine::save_state's sealed
// blob). It is one sealed container (base/state_io.h: magic, format version, length, CRC-32)
// holding one versioned "snapshot" section, so a truncated, damaged, foreign or newer file is
// refused, naming what is wrong, before anything is built from it.
//
// Files are written under a temporary name in the same directory, synced and renamed over the
// target (write_file_atomically), so no partial file ever carries the name a client gave.
//
// Threading: plain values and functions; any thread.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"
#include "memory/guest_memory.h"

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace kvmm {

// Firecracker's snapshot_type. A Full snapshot's memory file holds all of guest memory; a Diff
// snapshot's only the pages written since the snapshot before it (memory/memory_file_diff.h),
// so it is loaded with a memory file that the chain up to it was applied to.
enum class SnapshotType : uint8_t { Full = 0, Diff = 1 };

struct SnapshotFile {
    static constexpr std::string_view SECTION = "snapshot";
    // 2: the snapshot type after the configuration.
    static constexpr uint32_t VERSION = 2;
    // Bounds on what a file can make the reader allocate.
    static constexpr uint64_t MAX_CONFIG_BYTES = 1 << 20;
    static constexpr uint64_t MAX_STATE_BYTES = 64ull << 20;
    static constexpr uint64_t MAX_REGIONS = 64;
    // The largest snapshot file read: the fields above and their framing.
    static constexpr uint64_t MAX_FILE_BYTES = MAX_CONFIG_BYTES + MAX_STATE_BYTES + (1 << 20);

    std::string config_json;
    SnapshotType type { SnapshotType::Full };
    std::vector<GuestRegionSpec> memory_layout;
    std::vector<std::byte> machine_state;

    // The memory file's length that memory_layout implies.
    uint64_t memory_size() const;

    std::vector<std::byte> encode() const;
    // `what` names the file in errors ("snapshot file '/srv/vm.snap'").
    static Expected<SnapshotFile> decode(std::span<std::byte const> bytes, std::string_view what);
    // Reads and decodes the file at `path`.
    static Expected<SnapshotFile> read(std::string const& path);
};

// A file being written under a temporary name beside `path` (PATH.partial-XXXXXXXX):
// commit() syncs it and renames it to `path`; destroyed uncommitted, it is removed, and an
// existing file at `path` stays as it was. Several files that belong together (a snapshot and
// its memory file) are all written first and committed last, so a failure while writing
// leaves no new file next to an old one it does not belong with.
class PendingFile {
public:
    static Expected<PendingFile> create(std::string path);
    PendingFile(PendingFile&& other) noexcept;
    PendingFile& operator=(PendingFile&&) = delete;
    ~PendingFile();

    int fd() const { return m_fd.get(); }
    Expected<void> commit();

private:
    PendingFile(std::string path, std::string temporary, UniqueFd fd)
        : m_path(std::move(path)), m_temporary(std::move(temporary)), m_fd(std::move(fd)) {}

    std::string m_path;
    std::string m_temporary; // empty once committed or moved from
    UniqueFd m_fd;
};

// Creates `path` through a PendingFile that `write` fills (given its fd), then commits it.
Expected<void> write_file_atomically(std::string const& path, std::function<Expected<void>(int fd)> const& write);

} // namespace kvmm

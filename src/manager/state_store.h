// StateStore: the manager's on-disk state under one root directory:
//   ROOT/definitions/NAME.toml   VM definitions (vm_definition.h), written atomically
//   ROOT/runtime/NAME/           per-VM runtime directory (sockets) and runtime.json, the record
//                                of the kvmm process running the VM; intent.json while a start
//                                is in progress (the journal of the start transaction)
//   ROOT/logs/NAME.log           per-VM console/process log (log_file.h)
//   ROOT/saved/NAME.json         the saved-VM record (kvmmctl save): the snapshot and memory
//                                file a start restores the VM from
//   ROOT/snapshots/NAME/         snapshots kvmmctl snapshot takes (SNAPSHOT.snap, SNAPSHOT.mem)
// Every file is replaced atomically (write NAME.tmp, fsync, rename, fsync the directory), so
// a crash leaves either the old or the new contents, never a torn file. Only ROOT is opened by
// its path; everything below it is opened relative to its directory's fd with O_NOFOLLOW
// (base/directory.h), so a symbolic link planted in the tree is refused, never written through. The runtime record
// lets a restarted daemon re-attach to kvmm processes that outlived it: a record whose pid is
// alive with the same start time (/proc/PID/stat field 22) is the same process; a reused pid
// has a different start time.
//
// Threading: a StateStore holds only paths; concurrent calls for different VMs are safe,
// concurrent writers of the same VM must be serialised by the caller (the daemon's VM lock).
#pragma once

#include "base/directory.h"
#include "base/expected.h"
#include "base/unique_fd.h"
#include "manager/vm_definition.h"

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm {

struct RuntimeRecord {
    pid_t pid { 0 };
    uint64_t start_time { 0 }; // /proc/PID/stat field 22 (clock ticks after boot), to detect pid reuse
    std::string api_socket;
    std::string console_socket;
    std::string state; // "running" | "paused"

    bool operator==(RuntimeRecord const&) const = default;
};

// A VM saved with kvmmctl save: its next start restores it from these files.
struct SavedRecord {
    std::string snapshot_path;
    std::string memory_path;

    bool operator==(SavedRecord const&) const = default;
};

// Replaces `path` with `contents` atomically: writes PATH.tmp with `mode`, fsyncs it, renames
// it over `path` and fsyncs the directory (rename(2) is atomic; the directory fsync makes the
// rename durable).
Expected<void> atomic_write_file(std::filesystem::path const& path, std::string_view contents, mode_t mode);

// The start time of process `pid` in clock ticks since boot (proc(5): /proc/PID/stat field 22),
// or nullopt if there is no such process.
std::optional<uint64_t> process_start_time(pid_t pid);

// True if `record.pid` is alive and is the process the record was written for.
bool is_same_process(RuntimeRecord const& record);

// RuntimeRecord <-> JSON text (nlohmann); parsing errors name the field.
std::string runtime_record_to_json(RuntimeRecord const& record);
Expected<RuntimeRecord> runtime_record_from_json(std::string_view text);

class StateStore {
public:
    // Creates ROOT/{definitions,runtime,logs} with mode 0700 (and ROOT itself) if missing.
    static Expected<StateStore> open(std::filesystem::path root);

    // Atomic: NAME.toml.tmp, fsync, rename, fsync dir. Validates the name first.
    Expected<void> save_definition(VmDefinition const& definition);
    Expected<VmDefinition> load_definition(std::string const& name) const;
    // Names of all stored definitions, sorted.
    Expected<std::vector<std::string>> list() const;
    // Removes the definition; an error if there is none. Leaves logs and runtime state alone.
    Expected<void> remove_definition(std::string const& name);
    bool has_definition(std::string const& name) const;

    // ROOT/runtime/NAME, created (mode 0700) on demand.
    std::filesystem::path runtime_dir(std::string const& name) const;
    // ROOT/logs/NAME.log
    std::filesystem::path log_path(std::string const& name) const;

    // ROOT/runtime/NAME/runtime.json, written atomically.
    Expected<void> write_runtime_record(std::string const& name, RuntimeRecord const& record);
    // ROOT/runtime/NAME/FILE_NAME (machine.json, metrics.json), written atomically, mode 0600.
    Expected<void> write_runtime_file(std::string const& name, std::string_view file_name, std::string_view contents);
    // ROOT/logs/NAME.kvmm.log, created or truncated (mode 0600) for kvmm's stderr.
    Expected<UniqueFd> open_kvmm_log(std::string const& name);
    // nullopt when there is no record; an error when it exists but cannot be read or parsed.
    Expected<std::optional<RuntimeRecord>> read_runtime_record(std::string const& name) const;
    // Removes the record (no error if there was none).
    Expected<void> clear_runtime_record(std::string const& name);

    // ROOT/saved/NAME.json, written atomically; nullopt when the VM is not saved; an error
    // when the record exists but cannot be read or parsed.
    Expected<void> write_saved_record(std::string const& name, SavedRecord const& record);
    Expected<std::optional<SavedRecord>> read_saved_record(std::string const& name) const;
    Expected<void> clear_saved_record(std::string const& name);
    // ROOT/snapshots/NAME, created (mode 0700) on demand.
    Expected<std::filesystem::path> snapshot_dir(std::string const& name) const;

    // The start journal: ROOT/runtime/NAME/intent.json is written (atomically) before kvmm is
    // started and removed once runtime.json records the process or the start was undone. A
    // daemon that finds it knows that a start was interrupted and that any process in the VM's
    // cgroup may be one nobody tracks. It names the daemon that wrote it, for the log.
    Expected<void> write_start_intent(std::string const& name, pid_t daemon_pid);
    bool has_start_intent(std::string const& name) const;
    Expected<void> clear_start_intent(std::string const& name);
    // Removes everything in ROOT/runtime/NAME (record, intent, sockets, metrics, *.tmp left by
    // an interrupted atomic write); for a VM known to have no process.
    Expected<void> clear_runtime_dir(std::string const& name);
    // Removes the *.tmp files an interrupted atomic write left in ROOT/runtime/NAME.
    void remove_temporary_files(std::string const& name);

    std::filesystem::path const& root() const { return m_root; }

private:
    explicit StateStore(std::filesystem::path root) : m_root(std::move(root)) {}

    std::filesystem::path definition_path(std::string const& name) const;
    // ROOT/SUB: ROOT opened by its path, SUB relative to it without following a link.
    Expected<Directory> directory(std::string_view sub) const;
    // ROOT/runtime/NAME, created (0700) if missing, never through a link.
    Expected<Directory> runtime_directory(std::string const& name) const;

    std::filesystem::path m_root;
};

} // namespace kvmm

// Diff snapshots' memory files applied on top of a base (Firecracker's "snapshot-editor
// edit-memory rebase"): a diff memory file (GuestMemory::write_pages_to_file) is as long as the
// guest's memory and holds data only at the pages written since the snapshot before it; the
// rest are holes. Applying it copies each of its data extents (lseek SEEK_DATA / SEEK_HOLE) to
// the same offset of the base file, which then holds the memory of the diff's snapshot: load
// that snapshot's state file with it. A chain Full, Diff 1, Diff 2 is applied in order (Diff 1,
// then Diff 2) onto a copy of the Full memory file.
//
// The holes must be real: on a file system without SEEK_HOLE support the whole file counts as
// data and its clean pages (zeros) would overwrite the base. kvmm writes diffs with pwrite at
// page offsets, so a file system that allocates 4 KiB blocks (ext4, xfs, btrfs, tmpfs) keeps
// them exact.
//
// The base is changed in place: a failure half-way leaves it partly updated, so apply onto a
// copy when the base is still needed (the tool's usage says so).
//
// Threading: plain functions; any thread.
#pragma once

#include "base/expected.h"

#include <cstdint>
#include <string_view>

namespace kvmm {

struct DiffApplyStats {
    uint64_t bytes_copied { 0 };
    uint64_t extents { 0 };
};

// Copies the data extents of `diff_fd` into `base_fd` at the same offsets. Both must be
// regular files of the same length (a diff of another machine's memory is refused before
// anything is written). `base_what` and `diff_what` name the files in errors.
Expected<DiffApplyStats> apply_diff_memory_file(int base_fd, int diff_fd, std::string_view base_what,
                                                std::string_view diff_what);

} // namespace kvmm

// `kvmm snapshot-rebase`: applies diff snapshots' memory files onto a base memory file
// (memory/memory_file_diff.h), the merge step of a Diff chain, as Firecracker's
// "snapshot-editor edit-memory rebase" does:
//   kvmm snapshot-rebase --base-memory FULL.mem --diff-memory DIFF1.mem [--diff-memory DIFF2.mem ...]
// The diffs are applied in the order given; FULL.mem is changed in place and then holds the
// memory of the last diff's snapshot, which is loaded with that snapshot's state file.
//
// Threading: the main thread, before anything else runs.
#pragma once

namespace kvmm {

// argv[0] is "snapshot-rebase". Returns the process's exit status: 0, or 1 with the problem
// on stderr (a missing or unreadable file, files of different lengths).
int run_snapshot_rebase(int argc, char** argv);

} // namespace kvmm

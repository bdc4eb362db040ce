// Whole-file and ranged reads of host files (kernel, initrd, state files, kernel
// pseudo-files such as cgroup controls), with errors that name the path. Host files are untrusted input: sizes are
// capped by the caller.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvmm {

// Opens `path` read-only; the error names the path and the reason.
Expected<UniqueFd> open_read_only(std::string const& path);

// Reads the whole regular file at `path`, refusing files larger than `max_size` bytes.
Expected<std::vector<std::byte>> read_file(std::string const& path, uint64_t max_size);

// Reads `path` to its end as text, refusing more than `max_size` bytes. Unlike read_file it
// does not trust the size that stat reports, so it also reads /proc and cgroupfs files (which
// report 0 or 4096). A failed open keeps its errno (error_number()), e.g. ENOENT.
Expected<std::string> read_text_file(std::string const& path, uint64_t max_size);

} // namespace kvmm

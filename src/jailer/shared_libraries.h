// The shared libraries a dynamically linked exec file needs, so that the jailer can copy them
// into the jail. Firecracker's jailer expects a statically linked Firecracker; kvmm links
// libstdc++, fmt, spdlog and others dynamically (Debian ships no static fmt or spdlog), and
// inside the jail nothing of the host's /lib is visible, so the loader and each library are
// copied in at their host paths (read-only, root-owned).
//
// The list comes from the host's dynamic loader in its list mode (ld.so(8) --list), which maps
// the libraries and prints where it found them without running the program; the loader used
// is the exec file's PT_INTERP (ELF gABI, "Program Header"), accepted only as an absolute path
// to a root-owned file that others cannot write. A static executable (no PT_INTERP) needs none.
//
// Threading: one thread; runs the loader as a child process and waits for it.
#pragma once

#include "base/expected.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm::jailer {

// The PT_INTERP path of the ELF file open at `fd`, or nullopt for a static executable.
Expected<std::optional<std::string>> elf_interpreter(int fd, std::string const& name);

// Parses the loader's --list output: absolute library paths, the loader's own included;
// lines without a path (the vDSO) are skipped, "not found" is an error naming the library.
Expected<std::vector<std::string>> parse_loader_list(std::string_view output);

// The loader and libraries `exec_file` needs (empty for a static executable).
Expected<std::vector<std::string>> shared_libraries(std::string const& exec_file, int exec_fd);

} // namespace kvmm::jailer

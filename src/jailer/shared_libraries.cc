#include "jailer/shared_libraries.h"

#include "base/path.h"
#include "base/unique_fd.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvmm::jailer {
namespace {

// More program headers than any real executable has; bounds the read.
constexpr uint16_t MAX_PROGRAM_HEADERS = 256;
constexpr uint64_t MAX_INTERPRETER_LENGTH = 4096;
constexpr size_t MAX_LOADER_OUTPUT = 1 << 20;

Expected<void> read_exactly(int fd, void* buffer, size_t size, uint64_t offset, std::string const& what) {
    size_t done = 0;
    while (done < size) {
        auto const result =
            ::pread(fd, static_cast<char*>(buffer) + done, size - done, static_cast<off_t>(offset + done));
        if (result < 0 && errno == EINTR)
            continue;
        if (result < 0)
            return Error::from_errno(what);
        if (result == 0)
            return Error::format("{}: truncated at byte {} of {}", what, offset + done, offset + size);
        done += static_cast<size_t>(result);
    }
    return {};
}

} // namespace

Expected<std::optional<std::string>> elf_interpreter(int fd, std::string const& name) {
    Elf64_Ehdr header {};
    TRY(read_exactly(fd, &header, sizeof(header), 0, fmt::format("{}: ELF header", name)));
    if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 || header.e_ident[EI_CLASS] != ELFCLASS64)
        return Error::format("{}: not a 64-bit ELF executable", name);
    if (header.e_phentsize != sizeof(Elf64_Phdr) || header.e_phnum > MAX_PROGRAM_HEADERS)
        return Error::format("{}: {} program headers of {} bytes are not plausible", name, header.e_phnum,
                             header.e_phentsize);
    for (uint16_t index = 0; index < header.e_phnum; ++index) {
        Elf64_Phdr program {};
        TRY(read_exactly(fd, &program, sizeof(program), header.e_phoff + uint64_t { index } * sizeof(program),
                         fmt::format("{}: program header {}", name, index)));
        if (program.p_type != PT_INTERP)
            continue;
        if (program.p_filesz < 2 || program.p_filesz > MAX_INTERPRETER_LENGTH)
            return Error::format("{}: PT_INTERP of {} bytes", name, program.p_filesz);
        std::string path(program.p_filesz, '\0');
        TRY(read_exactly(fd, path.data(), path.size(), program.p_offset, fmt::format("{}: PT_INTERP", name)));
        if (path.back() != '\0')
            return Error::format("{}: PT_INTERP is not NUL-terminated", name);
        path.pop_back();
        TRY(check_path_characters(path, fmt::format("{}: PT_INTERP", name)));
        if (path.empty() || path.front() != '/')
            return Error::format("{}: PT_INTERP '{}' is not an absolute path", name, path);
        return std::optional<std::string>(std::move(path));
    }
    return std::optional<std::string>();
}

Expected<std::vector<std::string>> parse_loader_list(std::string_view output) {
    std::vector<std::string> paths;
    while (!output.empty()) {
        auto const end = output.find('\n');
        auto line = output.substr(0, end);
        output = end == std::string_view::npos ? std::string_view() : output.substr(end + 1);
        while (!line.empty() && (line.front() == '\t' || line.front() == ' '))
            line.remove_prefix(1);
        if (line.empty())
            continue;
        if (line.find("not found") != std::string_view::npos)
            return Error::format("the dynamic loader finds no '{}'", escape_control_characters(line));
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        if (auto const arrow = line.find(" => "); arrow != std::string_view::npos)
            line = line.substr(arrow + 4);
        if (line.empty() || line.front() != '/')
            continue; // linux-vdso.so.1: in the kernel, nothing to copy
        auto const address = line.rfind(" (");
        auto const path = address == std::string_view::npos ? line : line.substr(0, address);
        TRY(check_path_characters(path, "dynamic loader output"));
        // The library goes to the same path in the jail, reached component by component: a
        // "." or ".." (an $ORIGIN/../lib run path) would point elsewhere there.
        if (path.find("/./") != std::string_view::npos || path.find("/../") != std::string_view::npos ||
            path.find("//") != std::string_view::npos || path.ends_with("/.") || path.ends_with("/.."))
            return Error::format("library path '{}' is not in normal form (no '.', '..' or empty components)", path);
        paths.emplace_back(path);
    }
    return paths;
}

Expected<std::vector<std::string>> shared_libraries(std::string const& exec_file, int exec_fd) {
    auto const interpreter = TRY(elf_interpreter(exec_fd, exec_file));
    if (!interpreter)
        return std::vector<std::string>();
    struct stat status {};
    if (::stat(interpreter->c_str(), &status) != 0)
        return Error::from_errno(fmt::format("{}: its loader {}", exec_file, *interpreter));
    if (!S_ISREG(status.st_mode) || status.st_uid != 0 || (status.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return Error::format("{}: its loader {} is not a root-owned regular file that only root can write; "
                             "refusing to run it",
                             exec_file, *interpreter);

    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
        return Error::from_errno("pipe for the dynamic loader's output");
    UniqueFd read_end(pipe_fds[0]);
    UniqueFd write_end(pipe_fds[1]);
    pid_t const child = ::fork();
    if (child < 0)
        return Error::from_errno("fork for the dynamic loader");
    if (child == 0) {
        ::dup2(write_end.get(), STDOUT_FILENO);
        // The file checked, by its descriptor: a rename of the path since cannot swap it.
        ::fcntl(exec_fd, F_SETFD, 0);
        auto const by_descriptor = fmt::format("/proc/self/fd/{}", exec_fd);
        char const* arguments[] = { interpreter->c_str(), "--list", by_descriptor.c_str(), nullptr };
        // No LD_LIBRARY_PATH or LD_PRELOAD: the libraries found are the system's.
        char const* environment[] = { nullptr };
        ::execve(interpreter->c_str(), const_cast<char* const*>(arguments), const_cast<char* const*>(environment));
        ::_exit(127);
    }
    write_end.reset();
    std::string output;
    char buffer[4096];
    while (output.size() < MAX_LOADER_OUTPUT) {
        auto const got = ::read(read_end.get(), buffer, sizeof(buffer));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        output.append(buffer, static_cast<size_t>(got));
    }
    read_end.reset();
    int wait_status = 0;
    while (::waitpid(child, &wait_status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0)
        return Error::format("{} --list {}: failed (wait status {:#x})", *interpreter, exec_file, wait_status);
    auto paths = TRY(parse_loader_list(output));
    bool has_interpreter = false;
    for (auto const& path : paths)
        has_interpreter = has_interpreter || path == *interpreter;
    if (!has_interpreter)
        paths.push_back(*interpreter);
    return paths;
}

} // namespace kvmm::jailer

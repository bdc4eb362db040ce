// Directory: an open directory, and files opened relative to it without following symbolic
// links (openat with O_NOFOLLOW), for programs that keep state in a directory tree that a less
// trusted process may also write (kvmmd's state directory holds each VM's runtime files).
//
// Why: opening "ROOT/logs/NAME.kvmm.log" by path follows a symbolic link planted at any of its
// components, so a planted link made kvmmd truncate and overwrite a file of the attacker's
// choosing as root. Here only the directory the administrator named is opened by path (links
// in it are the administrator's); every step below it is one component opened relative to
// the directory before it, with O_NOFOLLOW: a link is refused with an error naming the path.
// Atomic writes create their temporary file in the same directory fd and rename it there.
//
// Threading: a Directory is a value with one owner; its const members may be used from any
// thread (they only issue *at() calls on the fd).
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace kvmm {

class Directory {
public:
    // Opens the directory at `path`, following links in the path itself.
    static Expected<Directory> open(std::filesystem::path const& path);

    // The directory `name` (a single path component) inside this one; with `create_mode`,
    // created with that mode if missing. A symbolic link at `name` is an error.
    Expected<Directory> subdirectory(std::string_view name, std::optional<mode_t> create_mode = std::nullopt) const;

    // openat(name, flags | O_NOFOLLOW | O_CLOEXEC, mode): a symbolic link is an error naming the
    // path ("is a symbolic link"); other failures keep their errno (error_number()).
    Expected<UniqueFd> open_file(std::string_view name, int flags, mode_t mode = 0600) const;

    // Replaces `name` atomically: writes NAME.tmp (a link or file left there is removed first),
    // fsyncs it, sets exactly `mode`, renames it over `name` and fsyncs the directory.
    // `before_rename` runs between the two (crash tests stop the process there).
    Expected<void> write_atomically(std::string_view name, std::string_view contents, mode_t mode,
                                    std::function<void()> const& before_rename = {}) const;

    // The whole file `name`, nullopt if it does not exist; larger than `max_size` is an error.
    Expected<std::optional<std::string>> read_file(std::string_view name, uint64_t max_size) const;

    // Removes `name`; false if it did not exist.
    Expected<bool> remove(std::string_view name) const;

    Expected<void> sync() const;

    int fd() const { return m_fd.get(); }
    std::filesystem::path const& path() const { return m_path; }

private:
    Directory(UniqueFd fd, std::filesystem::path path) : m_fd(std::move(fd)), m_path(std::move(path)) {}
    Expected<void> check_name(std::string_view name) const;

    UniqueFd m_fd;
    std::filesystem::path m_path;
};

} // namespace kvmm

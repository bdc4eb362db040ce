#include "base/storage_file_policy.h"

#include <fmt/format.h>

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <array>
#include <climits>
#include <cstdlib>
#include <memory>

namespace kvmm {
namespace {

struct PseudoFilesystem {
    unsigned long magic;
    std::string_view name;
};

// statfs(2) f_type values of the kernel's pseudo filesystems (include/uapi/linux/magic.h).
constexpr std::array<PseudoFilesystem, 11> PSEUDO_FILESYSTEMS { {
    { PROC_SUPER_MAGIC, "procfs" },
    { SYSFS_MAGIC, "sysfs" },
    { DEBUGFS_MAGIC, "debugfs" },
    { TRACEFS_MAGIC, "tracefs" },
    { SECURITYFS_MAGIC, "securityfs" },
    { CGROUP_SUPER_MAGIC, "cgroupfs" },
    { CGROUP2_SUPER_MAGIC, "cgroup2fs" },
    { 0x62656570, "configfs" }, // CONFIGFS_MAGIC, absent from older uapi headers
    { BPF_FS_MAGIC, "bpffs" },
    { EFIVARFS_MAGIC, "efivarfs" },
    { PSTOREFS_MAGIC, "pstore" },
} };

bool is_under(std::string_view path, std::string_view directory) {
    return path == directory ||
           (path.starts_with(directory) && path.size() > directory.size() && path[directory.size()] == '/');
}

std::string_view kind_of(mode_t mode) {
    switch (mode & S_IFMT) {
    case S_IFDIR:
        return "a directory";
    case S_IFCHR:
        return "a character device";
    case S_IFIFO:
        return "a FIFO";
    case S_IFSOCK:
        return "a socket";
    case S_IFLNK:
        return "a symbolic link";
    default:
        return "of an unknown kind";
    }
}

Expected<void> check_kind(struct stat const& status, std::string const& path, std::string_view what) {
    if (S_ISREG(status.st_mode) || S_ISBLK(status.st_mode))
        return {};
    return Error::format("{} '{}' is {}, not a regular file or a block device", what, path, kind_of(status.st_mode));
}

} // namespace

Expected<void> check_storage_path(std::string const& path, std::string_view what) {
    // realpath() resolves every symbolic link, so /dev/fd/N, /proc/self/root/... and a link
    // planted elsewhere all show where they lead.
    std::unique_ptr<char, decltype(&std::free)> canonical(::realpath(path.c_str(), nullptr), &std::free);
    if (canonical) {
        std::string_view const resolved(canonical.get());
        for (std::string_view const directory : { "/proc", "/sys" }) {
            if (is_under(resolved, directory))
                return Error::format("{} '{}' is under {} (resolves to '{}'): kernel files cannot back a disk", what,
                                     path, directory, resolved);
        }
    }
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0)
        return {}; // missing or unreachable: the open names the reason
    return check_kind(status, path, what);
}

Expected<void> check_storage_file(int fd, std::string const& path, std::string_view what) {
    struct stat status {};
    if (::fstat(fd, &status) != 0)
        return Error::from_errno(fmt::format("cannot stat {} '{}'", what, path));
    TRY(check_kind(status, path, what));
    struct statfs filesystem {};
    if (::fstatfs(fd, &filesystem) != 0)
        return Error::from_errno(fmt::format("cannot statfs {} '{}'", what, path));
    for (auto const& pseudo : PSEUDO_FILESYSTEMS) {
        if (static_cast<unsigned long>(filesystem.f_type) == pseudo.magic)
            return Error::format("{} '{}' is a file of {}: kernel files cannot back a disk", what, path, pseudo.name);
    }
    return {};
}

} // namespace kvmm

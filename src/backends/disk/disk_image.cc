#include "backends/disk/disk_image.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace kvmm {

namespace {

uint32_t fold_to_32_bits(uint64_t value) { return static_cast<uint32_t>(value ^ (value >> 32)); }

// "kvmm" and two 8-digit hex numbers: exactly VIRTIO_BLK_ID_BYTES (20). Device and inode
// numbers below 2^32, the usual case, are kept whole.
std::string make_device_id(struct stat const& status) {
    return fmt::format("kvmm{:08x}{:08x}", fold_to_32_bits(status.st_dev), fold_to_32_bits(status.st_ino));
}

Expected<uint64_t> size_of(int fd, struct stat const& status, std::string const& path) {
    uint64_t size_bytes = static_cast<uint64_t>(status.st_size);
    if (S_ISBLK(status.st_mode) && ::ioctl(fd, BLKGETSIZE64, &size_bytes) != 0)
        return Error::from_errno(fmt::format("cannot read the size of block device '{}'", path));
    return size_bytes;
}

} // namespace

Expected<DiskImage> DiskImage::open(std::string const& path, bool read_only) {
    int const flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    UniqueFd fd(::open(path.c_str(), flags));
    if (!fd.is_valid())
        return Error::from_errno(
            fmt::format("cannot open disk image '{}' {}", path, read_only ? "read-only" : "read-write"));

    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("cannot stat disk image '{}'", path));
    bool const block_device = S_ISBLK(status.st_mode);
    if (!block_device && !S_ISREG(status.st_mode))
        return Error::format("disk image '{}' is neither a regular file nor a block device (mode {:o})", path,
                             status.st_mode & S_IFMT);

    if (::flock(fd.get(), (read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            return Error(fmt::format("disk image '{}' is locked {} by another user (another VM?)", path,
                                     read_only ? "for writing" : "for reading or writing"),
                         EWOULDBLOCK);
        return Error::from_errno(fmt::format("cannot lock disk image '{}'", path));
    }

    uint64_t const size_bytes = TRY(size_of(fd.get(), status, path));
    return DiskImage(std::move(fd), path, size_bytes, read_only, block_device, make_device_id(status));
}

Expected<uint64_t> DiskImage::current_size() const {
    struct stat status {};
    if (::fstat(m_fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("cannot stat disk image '{}'", m_path));
    return size_of(m_fd.get(), status, m_path);
}

bool DiskImage::is_same_file(std::string const& path) const {
    struct stat mine {};
    struct stat theirs {};
    return ::fstat(m_fd.get(), &mine) == 0 && ::stat(path.c_str(), &theirs) == 0 && mine.st_dev == theirs.st_dev &&
           mine.st_ino == theirs.st_ino;
}

} // namespace kvmm

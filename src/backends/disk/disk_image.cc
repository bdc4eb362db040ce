#include "backends/disk/disk_image.h"

#include "backends/disk/qcow2_image.h"
#include "base/storage_file_policy.h"

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

DiskImage::DiskImage(UniqueFd fd, std::string path, uint64_t size_bytes, bool read_only, bool block_device,
                     std::string device_id)
    : m_fd(std::move(fd)), m_path(std::move(path)), m_size_bytes(size_bytes), m_read_only(read_only),
      m_block_device(block_device), m_device_id(std::move(device_id)) {}
DiskImage::DiskImage(DiskImage&&) noexcept = default;
DiskImage& DiskImage::operator=(DiskImage&& other) noexcept {
    if (this == &other)
        return *this;
    m_qcow2.reset(); // before its fd closes
    m_fd = std::move(other.m_fd);
    m_path = std::move(other.m_path);
    m_size_bytes = other.m_size_bytes;
    m_read_only = other.m_read_only;
    m_block_device = other.m_block_device;
    m_device_id = std::move(other.m_device_id);
    m_qcow2 = std::move(other.m_qcow2);
    return *this;
}
// The qcow2 layer goes first: it writes its dirty metadata back through the fd.
DiskImage::~DiskImage() { m_qcow2.reset(); }

Expected<DiskImage> DiskImage::open(std::string const& path, bool read_only, DiskFormat format) {
    qcow2::ChainContext chain;
    return open_in_chain(path, read_only, format, chain);
}

Expected<DiskImage> DiskImage::open_in_chain(std::string const& path, bool read_only, DiskFormat format,
                                             qcow2::ChainContext& chain) {
    // Only regular files and block devices outside the kernel's pseudo filesystems (no
    // /proc/self/mem as a disk), checked before the open and again on the opened file.
    TRY(check_storage_path(path, "disk image"));
    // O_NONBLOCK: a path swapped for a FIFO after the check must not block the open; it is
    // cleared again at once (io_uring would answer EAGAIN on a non-blocking file).
    int const flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
    UniqueFd fd(::open(path.c_str(), flags));
    if (!fd.is_valid())
        return Error::from_errno(
            fmt::format("cannot open disk image '{}' {}", path, read_only ? "read-only" : "read-write"));
    TRY(check_storage_file(fd.get(), path, "disk image"));
    int const status_flags = ::fcntl(fd.get(), F_GETFL);
    if (status_flags < 0 || ::fcntl(fd.get(), F_SETFL, status_flags & ~O_NONBLOCK) != 0)
        return Error::from_errno(fmt::format("cannot clear O_NONBLOCK on disk image '{}'", path));

    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("cannot stat disk image '{}'", path));
    bool const block_device = S_ISBLK(status.st_mode);
    if (!chain.files.insert({ status.st_dev, status.st_ino }).second)
        return Error::format("disk image '{}' is already in its own backing chain (a loop)", path);

    if (::flock(fd.get(), (read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            return Error(fmt::format("disk image '{}' is locked {} by another user (another VM?)", path,
                                     read_only ? "for writing" : "for reading or writing"),
                         EWOULDBLOCK);
        return Error::from_errno(fmt::format("cannot lock disk image '{}'", path));
    }

    uint64_t const size_bytes = TRY(size_of(fd.get(), status, path));
    if (format == DiskFormat::Raw)
        return DiskImage(std::move(fd), path, size_bytes, read_only, block_device, make_device_id(status));
    auto layer = TRY(qcow2::Image::open(fd.get(), path, read_only, size_bytes, chain));
    uint64_t const virtual_size = layer->virtual_size();
    DiskImage image(std::move(fd), path, virtual_size, read_only, block_device, make_device_id(status));
    image.m_qcow2 = std::move(layer);
    return image;
}

Expected<uint64_t> DiskImage::current_size() const {
    if (m_qcow2)
        return m_qcow2->virtual_size();
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

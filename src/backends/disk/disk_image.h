// DiskImage: an open raw disk image on the host - a regular file or a block
// device - that backs one virtio-blk device.
//
// Opening takes an advisory flock(2) on the image so that two VMs cannot both
// write it: read-write takes LOCK_EX, read-only takes LOCK_SH (several readers
// may share an image, but not with a writer). Both are non-blocking: a locked
// image is an error that names the path, never a hang. flock locks belong to
// the open file description, so they also conflict inside one process, and
// the kernel drops them when the fd is closed (including by a crash).
//
// The image file is host-supplied, untrusted input: its size is taken as it
// is (not necessarily a multiple of 512 bytes; the device rounds down).
//
// Format: raw or qcow2, always as the caller says (DiskFormat); a format is
// never guessed from the file's content, since a guest that can write a raw
// image could otherwise make it look like qcow2 with a backing file of its
// choosing. A qcow2 image carries its qcow2::Image (the translation layer and
// its backing chain, each backing file opened read-only and locked shared);
// size_bytes() is then the virtual size the guest sees.
//
// Threading: immutable after open(); its accessors may be called from any
// thread, except qcow2(), whose layer belongs to the thread of the engine that
// serves the image. The engines that do I/O on fd() must not outlive the image.
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <cstdint>
#include <memory>
#include <string>

namespace kvmm {

namespace qcow2 {
class Image;
struct ChainContext;
} // namespace qcow2

enum class DiskFormat { Raw, Qcow2 };

class DiskImage {
public:
    // Opens `path` (O_CLOEXEC; O_RDONLY when read_only, O_RDWR otherwise), checks that it is a
    // regular file or a block device, takes the lock and reads the size (fstat for files,
    // ioctl BLKGETSIZE64 for block devices). Errors name the path and the reason.
    static Expected<DiskImage> open(std::string const& path, bool read_only, DiskFormat format = DiskFormat::Raw);
    // open() for one image of a backing chain: refuses a file already in `chain` (a loop).
    static Expected<DiskImage> open_in_chain(std::string const& path, bool read_only, DiskFormat format,
                                             qcow2::ChainContext& chain);
    DiskImage(DiskImage&&) noexcept;
    DiskImage& operator=(DiskImage&&) noexcept;
    ~DiskImage();

    int fd() const { return m_fd.get(); }
    uint64_t size_bytes() const { return m_size_bytes; }
    bool read_only() const { return m_read_only; }
    bool is_block_device() const { return m_block_device; }
    std::string const& path() const { return m_path; }
    DiskFormat format() const { return m_qcow2 ? DiskFormat::Qcow2 : DiskFormat::Raw; }
    // The qcow2 layer of a qcow2 image, nullptr for raw.
    qcow2::Image* qcow2() const { return m_qcow2.get(); }

    // A stable identifier of the underlying file, derived from st_dev and st_ino: the same file
    // gives the same id across runs (as long as it is not copied or moved to another file
    // system). At most 20 bytes, VIRTIO_BLK_ID_BYTES (virtio 1.2 section 5.2.6), so it can
    // answer VIRTIO_BLK_T_GET_ID when no serial is configured.
    std::string const& device_id() const { return m_device_id; }

    // The image's size now (fstat, or BLKGETSIZE64 for a block device): a file grown or
    // shrunk on the host while in use. size_bytes() keeps the size at open. For qcow2, the
    // virtual size (which does not change while the image is open).
    Expected<uint64_t> current_size() const;
    // Whether `path` names this image's file (the same st_dev and st_ino); false when `path`
    // cannot be examined.
    bool is_same_file(std::string const& path) const;

private:
    DiskImage(UniqueFd fd, std::string path, uint64_t size_bytes, bool read_only, bool block_device,
              std::string device_id);

    UniqueFd m_fd;
    std::string m_path;
    uint64_t m_size_bytes { 0 };
    bool m_read_only { false };
    bool m_block_device { false };
    std::string m_device_id;
    std::unique_ptr<qcow2::Image> m_qcow2;
};

} // namespace kvmm

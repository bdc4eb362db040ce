#include "api/host_checks.h"

#include "base/storage_file_policy.h"
#include "base/unique_fd.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>

namespace kvmm {
namespace {

// The type is checked before the open, so that no device node or FIFO a request names is ever
// opened here (opening some devices has effects); O_NONBLOCK covers a path swapped for a FIFO in
// between, whose open would otherwise wait for a writer and stall the API thread.
Expected<UniqueFd> open_checked(std::string const& path, int access, bool block_device_allowed,
                                std::string const& what) {
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0)
        return Error::from_errno(fmt::format("cannot open {} '{}'", what, path));
    auto const acceptable = [&](struct stat const& s) {
        return S_ISREG(s.st_mode) || (block_device_allowed && S_ISBLK(s.st_mode));
    };
    std::string_view const expected = block_device_allowed ? "a regular file or a block device" : "a regular file";
    if (!acceptable(status))
        return Error::format("{} '{}' is not {}", what, path, expected);
    UniqueFd fd(::open(path.c_str(), access | O_NONBLOCK | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot open {} '{}'", what, path));
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("cannot stat {} '{}'", what, path));
    if (!acceptable(status))
        return Error::format("{} '{}' is not {}", what, path, expected);
    return fd;
}

// The kernel's dev_t inside unix_diag (the superblock's s_dev) keeps the major number in the top
// 12 bits and the minor in the low 20 (include/linux/kdev_t.h, MINORBITS), unlike the user-space
// encoding stat() returns.
bool same_device(uint32_t kernel_device, dev_t user_device) {
    return (kernel_device >> 20) == ::major(user_device) && (kernel_device & 0xfffff) == ::minor(user_device);
}

// Netlink messages and their attributes start on 4-byte boundaries (netlink(7)).
constexpr size_t netlink_align(size_t length) { return (length + 3) & ~size_t { 3 }; }

// One dump of every Unix socket with its bound file's inode; true when one is bound to `status`.
Expected<bool> unix_socket_bound_to(struct stat const& status) {
    UniqueFd netlink(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    if (!netlink.is_valid())
        return Error::from_errno("socket(NETLINK_SOCK_DIAG)");
    struct {
        nlmsghdr header;
        unix_diag_req request;
    } message {};
    message.header.nlmsg_len = sizeof(message);
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.request.sdiag_family = AF_UNIX;
    message.request.udiag_states = ~0u; // every state: bound-only sockets too, not just listeners
    message.request.udiag_show = UDIAG_SHOW_VFS;
    if (::send(netlink.get(), &message, sizeof(message), 0) < 0)
        return Error::from_errno("unix_diag request");

    alignas(nlmsghdr) char buffer[16384];
    while (true) {
        ssize_t received = ::recv(netlink.get(), buffer, sizeof(buffer), 0);
        if (received < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno("unix_diag reply");
        }
        if (received == 0)
            return Error("unix_diag: the reply ended early");
        // The reply is walked by offset, each header and attribute copied out (the netlink
        // macros cast unaligned char pointers and mix signed and unsigned lengths).
        std::span<char const> const reply(buffer, static_cast<size_t>(received));
        size_t offset = 0;
        while (reply.size() - offset >= sizeof(nlmsghdr)) {
            nlmsghdr header {};
            std::memcpy(&header, reply.data() + offset, sizeof(header));
            if (header.nlmsg_len < sizeof(nlmsghdr) || header.nlmsg_len > reply.size() - offset)
                return Error::format("unix_diag: a reply message of {} bytes does not fit", header.nlmsg_len);
            auto const payload = reply.subspan(offset + netlink_align(sizeof(nlmsghdr)),
                                               header.nlmsg_len - netlink_align(sizeof(nlmsghdr)));
            offset = std::min(reply.size(), offset + netlink_align(header.nlmsg_len));
            if (header.nlmsg_type == NLMSG_DONE)
                return false;
            if (header.nlmsg_type == NLMSG_ERROR) {
                int error = 0;
                if (payload.size() >= sizeof(error))
                    std::memcpy(&error, payload.data(), sizeof(error));
                return Error::format("unix_diag: {}", std::strerror(-error));
            }
            if (header.nlmsg_type != SOCK_DIAG_BY_FAMILY || payload.size() < sizeof(unix_diag_msg))
                continue;
            size_t attribute = netlink_align(sizeof(unix_diag_msg));
            while (attribute < payload.size() && payload.size() - attribute >= sizeof(rtattr)) {
                rtattr header_of_attribute {};
                std::memcpy(&header_of_attribute, payload.data() + attribute, sizeof(header_of_attribute));
                size_t const attribute_length = header_of_attribute.rta_len;
                if (attribute_length < sizeof(rtattr) || attribute_length > payload.size() - attribute)
                    break;
                size_t const data = netlink_align(sizeof(rtattr));
                if (header_of_attribute.rta_type == UNIX_DIAG_VFS && attribute_length >= data + sizeof(unix_diag_vfs)) {
                    unix_diag_vfs vfs {};
                    std::memcpy(&vfs, payload.data() + attribute + data, sizeof(vfs));
                    if (vfs.udiag_vfs_ino == static_cast<uint32_t>(status.st_ino) &&
                        same_device(vfs.udiag_vfs_dev, status.st_dev))
                        return true;
                }
                attribute += netlink_align(attribute_length);
            }
        }
    }
}

} // namespace

Expected<void> check_boot_files(VmConfig const& vm) {
    TRY(open_checked(vm.kernel_path, O_RDONLY, false, "boot-source: the kernel image"));
    if (vm.initrd_path)
        TRY(open_checked(*vm.initrd_path, O_RDONLY, false, "boot-source: the initrd"));
    return {};
}

// The same access and lock as the disk backend takes (backends/disk/disk_image.cc: flock, shared
// for a read-only drive, exclusive otherwise), released when the descriptor closes here.
Expected<void> check_drive_file(DiskConfig const& disk) {
    auto const what = fmt::format("drive '{}': image", disk.id);
    TRY(check_storage_path(disk.path, what));
    UniqueFd fd = TRY(open_checked(disk.path, disk.read_only ? O_RDONLY : O_RDWR, true, what));
    TRY(check_storage_file(fd.get(), disk.path, what));
    if (::flock(fd.get(), (disk.read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            return Error::format("{} '{}' is locked {} by another user (another VM?)", what, disk.path,
                                 disk.read_only ? "for writing" : "for reading or writing");
        return Error::from_errno(fmt::format("cannot lock {} '{}'", what, disk.path));
    }
    return {};
}

Expected<void> check_vsock_directory(VsockConfig const& vsock) {
    auto const slash = vsock.uds_path.rfind('/');
    std::string const directory = slash == std::string::npos
                                      ? std::string(".")
                                      : (slash == 0 ? std::string("/") : vsock.uds_path.substr(0, slash));
    struct stat status {};
    if (::stat(directory.c_str(), &status) != 0)
        return Error::from_errno(fmt::format("vsock: the directory '{}' of uds_path '{}'", directory, vsock.uds_path));
    if (!S_ISDIR(status.st_mode))
        return Error::format("vsock: '{}' (in uds_path '{}') is not a directory", directory, vsock.uds_path);
    return {};
}

Expected<void> check_socket_path_unbound(std::string const& path) {
    struct stat status {};
    if (::lstat(path.c_str(), &status) != 0 || !S_ISSOCK(status.st_mode))
        return {}; // nothing there, or not a socket: the server's own checks report it
    if (TRY(unix_socket_bound_to(status)))
        return Error::format("'{}' is in use: a socket is bound to it", path);
    return {};
}

} // namespace kvmm

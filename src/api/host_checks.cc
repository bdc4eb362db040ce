#include "api/host_checks.h"

#include "backends/disk/disk_image.h"
#include "base/unique_fd.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvmm {
namespace {

Expected<void> check_readable_file(std::string const& path, std::string_view what) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("boot-source: cannot open the {} '{}'", what, path));
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0)
        return Error::from_errno(fmt::format("boot-source: cannot stat the {} '{}'", what, path));
    if (!S_ISREG(status.st_mode))
        return Error::format("boot-source: the {} '{}' is not a regular file", what, path);
    return {};
}

// The kernel's dev_t inside unix_diag (the superblock's s_dev) keeps the major number in the top
// 12 bits and the minor in the low 20 (include/linux/kdev_t.h, MINORBITS), unlike the user-space
// encoding stat() returns.
bool same_device(uint32_t kernel_device, dev_t user_device) {
    return (kernel_device >> 20) == ::major(user_device) && (kernel_device & 0xfffff) == ::minor(user_device);
}

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
        int remaining = static_cast<int>(received);
        for (auto* header = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(header, remaining);
             header = NLMSG_NEXT(header, remaining)) {
            if (header->nlmsg_type == NLMSG_DONE)
                return false;
            if (header->nlmsg_type == NLMSG_ERROR) {
                auto const* error = static_cast<nlmsgerr const*>(NLMSG_DATA(header));
                return Error::format("unix_diag: {}", std::strerror(-error->error));
            }
            if (header->nlmsg_type != SOCK_DIAG_BY_FAMILY)
                continue;
            auto const* socket = static_cast<unix_diag_msg const*>(NLMSG_DATA(header));
            int attributes_length = static_cast<int>(header->nlmsg_len - NLMSG_LENGTH(sizeof(*socket)));
            for (auto* attribute = reinterpret_cast<rtattr*>(const_cast<unix_diag_msg*>(socket) + 1);
                 RTA_OK(attribute, attributes_length); attribute = RTA_NEXT(attribute, attributes_length)) {
                if (attribute->rta_type != UNIX_DIAG_VFS || RTA_PAYLOAD(attribute) < sizeof(unix_diag_vfs))
                    continue;
                unix_diag_vfs vfs {};
                std::memcpy(&vfs, RTA_DATA(attribute), sizeof(vfs));
                if (vfs.udiag_vfs_ino == static_cast<uint32_t>(status.st_ino) &&
                    same_device(vfs.udiag_vfs_dev, status.st_dev))
                    return true;
            }
        }
    }
}

} // namespace

Expected<void> check_boot_files(VmConfig const& vm) {
    TRY(check_readable_file(vm.kernel_path, "kernel image"));
    if (vm.initrd_path)
        TRY(check_readable_file(*vm.initrd_path, "initrd"));
    return {};
}

Expected<void> check_drive_file(DiskConfig const& disk) {
    TRY(DiskImage::open(disk.path, disk.read_only).with_context(fmt::format("drive '{}'", disk.id)));
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

// Tap: the host end of a virtio-net device, a Linux TAP interface opened
// through /dev/net/tun (Documentation/networking/tuntap.rst).
//
// Every frame crossing the fd is prefixed with a virtio-net header
// (IFF_VNET_HDR), so checksum and segmentation offloads pass between guest and
// host kernel untouched, and no TUN packet-information prefix is used
// (IFF_NO_PI). The fd is non-blocking and close-on-exec: the event loop polls
// it, and a read or write that would block reports so instead of waiting.
//
// Ownership of the interface: kvmm only attaches to a TAP, it never configures
// the host network. The administrator (or an orchestrator, or a test inside its
// own network namespace) creates the interface, brings it up, gives it
// addresses, routes, an MTU or a bridge, and, for unprivileged kvmm processes,
// either makes it persistent and owned by kvmm's user (ip tuntap add ... user)
// or opens it itself and hands the fd down (from_fd). open() creates a
// missing interface only as a non-persistent one, down and without addresses;
// it disappears when the last fd closes. kvmm never assigns host addresses.
//
// Threading: one owner, normally the event-loop thread; no internal locking.
// read() and write() may run concurrently with each other (the kernel
// serialises per direction), but not with set_*().
#pragma once

#include "base/expected.h"
#include "base/unique_fd.h"

#include <sys/uio.h>

#include <cstddef>
#include <optional>
#include <span>
#include <string>

namespace kvmm {

class Tap {
public:
    // The virtio-net header with num_buffers, used by every VIRTIO_F_VERSION_1 device
    // (virtio 1.2 section 5.1.6); the legacy header without num_buffers is 10 bytes.
    static constexpr int VIRTIO_NET_HEADER_SIZE = 12;

    // Attaches to the TAP interface `name`, creating it if it does not exist. Needs
    // CAP_NET_ADMIN unless the interface is persistent and owned by the caller. The vnet
    // header size starts at VIRTIO_NET_HEADER_SIZE.
    static Expected<Tap> open(std::string const& name);

    // Adopts `fd`, an attached /dev/net/tun fd inherited from a privileged parent. It must
    // be a TAP opened with IFF_NO_PI and IFF_VNET_HDR. On success the Tap owns the fd and
    // makes it non-blocking and close-on-exec (and sets the vnet header size to
    // VIRTIO_NET_HEADER_SIZE); on failure the caller still owns it. Checking IFF_NO_PI
    // briefly attaches an accept-all socket filter when none is installed (see tap.cc).
    static Expected<Tap> from_fd(int fd);

    // TUNSETVNETHDRSZ: the kernel accepts sizes from 10 (the legacy header) upwards.
    Expected<void> set_vnet_header_size(int size);

    // TUNSETOFFLOAD with TUN_F_* flags, normally tun_offloads_for_guest_features(...).
    Expected<void> set_offloads(unsigned tun_flags);

    // Reads one frame (vnet header first) into `buffers`; a frame larger than the buffers
    // is truncated by the kernel. Returns the bytes read, or std::nullopt when no frame is
    // queued (EAGAIN): wait for EPOLLIN and try again. EINTR is retried.
    Expected<std::optional<size_t>> read(std::span<iovec const> buffers) const;

    // Writes one frame (vnet header first) gathered from `buffers`. Returns the bytes
    // written, or std::nullopt when the kernel cannot take it now (EAGAIN): wait for
    // EPOLLOUT. EINTR is retried.
    Expected<std::optional<size_t>> write(std::span<iovec const> buffers) const;

    int fd() const { return m_fd.get(); }
    // The interface name as the kernel reports it.
    std::string const& name() const { return m_name; }

private:
    Tap(UniqueFd fd, std::string name) : m_fd(std::move(fd)), m_name(std::move(name)) {}

    UniqueFd m_fd;
    std::string m_name;
};

} // namespace kvmm

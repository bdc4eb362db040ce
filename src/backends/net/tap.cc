#include "backends/net/tap.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

namespace kvmm {

namespace {

constexpr char const* TUN_DEVICE_PATH = "/dev/net/tun";

// A short hint for the errno values TUNSETIFF commonly reports (drivers/net/tun.c, tun_set_iff).
char const* attach_failure_hint(int error_number) {
    switch (error_number) {
    case EPERM:
        return " (needs CAP_NET_ADMIN, or a persistent interface owned by this user or group)";
    case EBUSY:
        return " (another process has it attached and it is not multi-queue)";
    case EINVAL:
        return " (invalid interface name, or an existing interface that is TUN rather than TAP or multi-queue)";
    default:
        return "";
    }
}

// The Tap's fd must never block the event loop and must not leak into children.
Expected<void> make_non_blocking_and_close_on_exec(int fd) {
    int const status_flags = ::fcntl(fd, F_GETFL);
    if (status_flags < 0 || ::fcntl(fd, F_SETFL, status_flags | O_NONBLOCK) < 0)
        return Error::from_errno(fmt::format("making TAP fd {} non-blocking", fd));
    int const descriptor_flags = ::fcntl(fd, F_GETFD);
    if (descriptor_flags < 0 || ::fcntl(fd, F_SETFD, descriptor_flags | FD_CLOEXEC) < 0)
        return Error::from_errno(fmt::format("making TAP fd {} close-on-exec", fd));
    return {};
}

Expected<void> set_vnet_header_size_of(int fd, std::string const& name, int size) {
    if (::ioctl(fd, TUNSETVNETHDRSZ, &size) < 0)
        return Error::from_errno(fmt::format("TAP interface '{}': TUNSETVNETHDRSZ to {} bytes", name, size));
    return {};
}

// Whether the attached TAP behind `fd` was set up with IFF_NO_PI. TUNGETIFF alone cannot
// say: it also reports IFF_NOFILTER, which shares IFF_NO_PI's bit (0x1000), whenever the
// fd has no socket filter (drivers/net/tun.c, __tun_chr_ioctl). So when no filter program
// is recorded, an accept-all classic BPF filter is attached for the query and removed
// again; a filter the parent installed is left alone and the bit is taken as it reads
// (the kernel keeps a detached program recorded too, so after an attach/detach by the
// parent a missing IFF_NO_PI can go unnoticed: the bit then reads as IFF_NOFILTER).
Expected<bool> attached_without_packet_information(int fd, std::string const& name) {
    sock_fprog existing {};
    if (::ioctl(fd, TUNGETFILTER, &existing) < 0)
        return Error::from_errno(fmt::format("TAP fd {} ('{}'): TUNGETFILTER", fd, name));
    sock_filter accept_all { BPF_RET | BPF_K, 0, 0, 0xffffffff };
    sock_fprog probe { 1, &accept_all };
    bool const probing = existing.len == 0;
    if (probing && ::ioctl(fd, TUNATTACHFILTER, &probe) < 0)
        return Error::from_errno(fmt::format("TAP fd {} ('{}'): TUNATTACHFILTER", fd, name));
    ifreq request {};
    int const query_result = ::ioctl(fd, TUNGETIFF, &request);
    int const query_errno = errno;
    if (probing && ::ioctl(fd, TUNDETACHFILTER, &probe) < 0)
        return Error::from_errno(fmt::format("TAP fd {} ('{}'): TUNDETACHFILTER", fd, name));
    if (query_result < 0)
        return Error::from_errno(fmt::format("TAP fd {} ('{}'): TUNGETIFF", fd, name), query_errno);
    return (request.ifr_flags & IFF_NO_PI) != 0;
}

enum class Direction { Read, Write };

Expected<std::optional<size_t>> transfer(int fd, std::string const& name, Direction direction,
                                         std::span<iovec const> buffers) {
    char const* const verb = direction == Direction::Read ? "reading from" : "writing to";
    if (buffers.size() > IOV_MAX)
        return Error::format("{} TAP interface '{}': {} buffers exceed IOV_MAX ({})", verb, name, buffers.size(),
                             IOV_MAX);
    int const count = static_cast<int>(buffers.size());
    for (;;) {
        ssize_t const result =
            direction == Direction::Read ? ::readv(fd, buffers.data(), count) : ::writev(fd, buffers.data(), count);
        if (result >= 0)
            return std::optional<size_t>(static_cast<size_t>(result));
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return std::optional<size_t>();
        return Error::from_errno(fmt::format("{} TAP interface '{}'", verb, name));
    }
}

} // namespace

Expected<Tap> Tap::open(std::string const& name) {
    if (name.empty())
        return Error::format("TAP interface name is empty");
    if (name.size() > IFNAMSIZ - 1)
        return Error::format("TAP interface name '{}' is {} bytes long; Linux allows at most {} (IFNAMSIZ - 1)", name,
                             name.size(), IFNAMSIZ - 1);
    if (name.find('\0') != std::string::npos)
        return Error::format("TAP interface name '{}' contains a NUL byte", name);

    int const raw_fd = ::open(TUN_DEVICE_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (raw_fd < 0)
        return Error::from_errno(fmt::format("TAP interface '{}': opening {}", name, TUN_DEVICE_PATH));
    UniqueFd fd(raw_fd);

    ifreq request {};
    std::memcpy(request.ifr_name, name.data(), name.size());
    request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(fd.get(), TUNSETIFF, &request) < 0) {
        int const error_number = errno;
        return Error::from_errno(fmt::format("TAP interface '{}': TUNSETIFF{}", name,
                                             attach_failure_hint(error_number)),
                                 error_number);
    }
    // The kernel writes back the name it used (it expands templates such as "tap%d").
    std::string actual_name(request.ifr_name, ::strnlen(request.ifr_name, IFNAMSIZ));
    TRY(set_vnet_header_size_of(fd.get(), actual_name, VIRTIO_NET_HEADER_SIZE));
    return Tap(std::move(fd), std::move(actual_name));
}

Expected<Tap> Tap::from_fd(int fd) {
    if (fd < 0)
        return Error::format("TAP fd {} is not a valid file descriptor", fd);
    ifreq request {};
    if (::ioctl(fd, TUNGETIFF, &request) < 0) {
        int const error_number = errno;
        if (error_number == EBADFD)
            return Error::from_errno(
                fmt::format("TAP fd {}: TUNGETIFF (a /dev/net/tun fd not yet attached with TUNSETIFF)", fd),
                error_number);
        return Error::from_errno(fmt::format("TAP fd {}: TUNGETIFF (not a /dev/net/tun fd?)", fd), error_number);
    }
    std::string name(request.ifr_name, ::strnlen(request.ifr_name, IFNAMSIZ));
    int const flags = request.ifr_flags;
    if (!(flags & IFF_TAP))
        return Error::format("fd {} is attached to '{}', which is a TUN (layer 3) interface, not a TAP", fd, name);
    if (!(flags & IFF_VNET_HDR))
        return Error::format("fd {} (TAP interface '{}') was attached without IFF_VNET_HDR: frames would carry no "
                             "virtio-net header",
                             fd, name);
    if (!TRY(attached_without_packet_information(fd, name)))
        return Error::format("fd {} (TAP interface '{}') was attached without IFF_NO_PI: every frame would carry a "
                             "4-byte packet-information prefix",
                             fd, name);
    TRY(make_non_blocking_and_close_on_exec(fd));
    TRY(set_vnet_header_size_of(fd, name, VIRTIO_NET_HEADER_SIZE));
    return Tap(UniqueFd(fd), std::move(name));
}

Expected<void> Tap::set_vnet_header_size(int size) { return set_vnet_header_size_of(m_fd.get(), m_name, size); }

Expected<void> Tap::set_offloads(unsigned tun_flags) {
    // TUNSETOFFLOAD takes the flags as the ioctl argument itself, not through a pointer.
    if (::ioctl(m_fd.get(), TUNSETOFFLOAD, static_cast<unsigned long>(tun_flags)) < 0)
        return Error::from_errno(fmt::format("TAP interface '{}': TUNSETOFFLOAD with flags {:#x}", m_name, tun_flags));
    return {};
}

Expected<std::optional<size_t>> Tap::read(std::span<iovec const> buffers) const {
    return transfer(m_fd.get(), m_name, Direction::Read, buffers);
}

Expected<std::optional<size_t>> Tap::write(std::span<iovec const> buffers) const {
    return transfer(m_fd.get(), m_name, Direction::Write, buffers);
}

} // namespace kvmm

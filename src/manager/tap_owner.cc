#include "manager/tap_owner.h"

#include "base/unique_fd.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <unistd.h>

namespace kvmm {

namespace {

// kvmm's own flags (backends/net/tap.cc): attaching with other ones than the TAP has fails.
constexpr short TAP_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;

// /sys/class/net/NAME/{owner,group}: a number, -1 when unset; nullopt when there is no such
// interface.
std::optional<long long> sysfs_number(std::string const& name, char const* field) {
    std::ifstream file("/sys/class/net/" + name + "/" + field);
    long long value = 0;
    if (!(file >> value))
        return std::nullopt;
    return value;
}

Expected<UniqueFd> attach(std::string const& name) {
    if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos)
        return Error::format("TAP name '{}' is not an interface name (1 to {} characters, no '/')", name, IFNAMSIZ - 1);
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno("cannot open /dev/net/tun");
    ifreq request {};
    std::memcpy(request.ifr_name, name.data(), name.size());
    request.ifr_flags = TAP_FLAGS;
    if (::ioctl(fd.get(), TUNSETIFF, &request) != 0)
        return Error::from_errno(fmt::format("TAP '{}': TUNSETIFF", name));
    return fd;
}

Expected<void> set_owner(int fd, std::string const& name, long long owner, long long group) {
    if (::ioctl(fd, TUNSETOWNER, static_cast<unsigned long>(owner)) != 0 ||
        ::ioctl(fd, TUNSETGROUP, static_cast<unsigned long>(group)) != 0)
        return Error::from_errno(fmt::format("TAP '{}': cannot give it to {}:{}", name, owner, group));
    return {};
}

} // namespace

Expected<TapRecord> hand_tap_to(std::string const& name, uid_t uid, gid_t gid) {
    TapRecord record;
    record.name = name;
    auto const owner = sysfs_number(name, "owner");
    auto const group = sysfs_number(name, "group");
    record.created = !owner.has_value() && !std::ifstream("/sys/class/net/" + name + "/ifindex");
    record.owner = owner.value_or(-1);
    record.group = group.value_or(-1);
    auto fd = TRY(attach(name));
    auto undo = [&](Error error) -> Expected<TapRecord> {
        (void)set_owner(fd.get(), name, record.owner, record.group);
        if (record.created)
            (void)::ioctl(fd.get(), TUNSETPERSIST, 0);
        return error;
    };
    if (auto given = set_owner(fd.get(), name, uid, gid); !given)
        return undo(given.error());
    if (::ioctl(fd.get(), TUNSETPERSIST, 1) != 0)
        return undo(Error::from_errno(fmt::format("TAP '{}': TUNSETPERSIST", name)));
    return record;
}

Expected<void> restore_tap(TapRecord const& record) {
    auto fd = TRY(attach(record.name));
    if (record.created) {
        // Without persistence the TAP goes with its last descriptor, this one.
        if (::ioctl(fd.get(), TUNSETPERSIST, 0) != 0)
            return Error::from_errno(fmt::format("TAP '{}': cannot delete it", record.name));
        return {};
    }
    return set_owner(fd.get(), record.name, record.owner, record.group);
}

} // namespace kvmm

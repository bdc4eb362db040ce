#include "jailer/jail_cgroups.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>

namespace kvmm::jailer {
namespace {

constexpr uint64_t MAX_CONTROL_FILE_SIZE = 1 << 16;

std::vector<std::string> split(std::string_view text, char separator) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (start <= text.size()) {
        auto end = text.find(separator, start);
        if (end == std::string_view::npos)
            end = text.size();
        if (end > start)
            parts.emplace_back(text.substr(start, end - start));
        start = end + 1;
    }
    return parts;
}

// Reads a small control file below `directory_fd` (cgroupfs reports size 0, so read to EOF).
Expected<std::string> read_control(int directory_fd, std::string const& relative) {
    UniqueFd fd(::openat(directory_fd, relative.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("opening {}", relative));
    std::string text;
    char buffer[4096];
    while (text.size() < MAX_CONTROL_FILE_SIZE) {
        auto const got = ::read(fd.get(), buffer, sizeof(buffer));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return Error::from_errno(fmt::format("reading {}", relative));
        if (got == 0)
            break;
        text.append(buffer, static_cast<size_t>(got));
    }
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.pop_back();
    return text;
}

// One write(2) per value: the kernel parses each write of a control file on its own.
Expected<void> write_control(int directory_fd, std::string const& relative, std::string const& value) {
    UniqueFd fd(::openat(directory_fd, relative.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("opening {}", relative));
    auto const written = ::write(fd.get(), value.data(), value.size());
    if (written != static_cast<ssize_t>(value.size()))
        return Error::from_errno(fmt::format("writing '{}' to {}", value, relative));
    return {};
}

} // namespace

std::vector<CgroupMount> parse_cgroup_mounts(std::string_view mounts) {
    std::vector<CgroupMount> found;
    for (auto const& line : split(mounts, '\n')) {
        auto const fields = split(line, ' ');
        if (fields.size() < 4)
            continue;
        if (fields[2] == "cgroup2") {
            found.push_back({ fields[1], 2, {} });
        } else if (fields[2] == "cgroup") {
            CgroupMount mount { fields[1], 1, {} };
            for (auto const& option : split(fields[3], ','))
                if (option != "rw" && option != "ro" && option.find('=') == std::string::npos &&
                    !option.starts_with("no") && option != "relatime" && option != "noatime")
                    mount.controllers.push_back(option);
            found.push_back(std::move(mount));
        }
    }
    return found;
}

Expected<JailCgroups> JailCgroups::plan(JailerOptions const& options, std::string_view mounts_text) {
    JailCgroups cgroups;
    if (!options.joins_cgroup())
        return cgroups;
    cgroups.m_relative = options.cgroup_parent() + "/" + options.id;
    auto const mounts = parse_cgroup_mounts(mounts_text);

    auto open_root = [](std::string const& path) -> Expected<UniqueFd> {
        UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd.is_valid())
            return Error::from_errno(fmt::format("cgroup hierarchy {}", path));
        return fd;
    };

    if (options.cgroup_version == 2) {
        CgroupMount const* unified = nullptr;
        for (auto const& mount : mounts)
            if (mount.version == 2 && unified == nullptr)
                unified = &mount;
        if (unified == nullptr)
            return Error("--cgroup-version 2: no cgroup2 file system is mounted (see /proc/self/mounts)");
        Hierarchy hierarchy { unified->path, 2, TRY(open_root(unified->path)), options.cgroups };
        auto const available = split(TRY(read_control(hierarchy.root.get(), "cgroup.controllers")), ' ');
        for (auto const& setting : options.cgroups) {
            bool found = false;
            for (auto const& controller : available)
                found = found || controller == setting.controller();
            if (!found)
                return Error::format("--cgroup {}: controller '{}' is not available in the cgroup v2 hierarchy {} "
                                     "(it offers: {})",
                                     setting.file, setting.controller(), unified->path, fmt::join(available, " "));
        }
        cgroups.m_hierarchies.push_back(std::move(hierarchy));
        return cgroups;
    }

    for (auto const& setting : options.cgroups) {
        CgroupMount const* match = nullptr;
        for (auto const& mount : mounts)
            for (auto const& controller : mount.controllers)
                if (mount.version == 1 && controller == setting.controller() && match == nullptr)
                    match = &mount;
        if (match == nullptr)
            return Error::format("--cgroup {}: no cgroup v1 hierarchy has the '{}' controller mounted (with a "
                                 "unified hierarchy, pass --cgroup-version 2)",
                                 setting.file, setting.controller());
        bool added = false;
        for (auto& hierarchy : cgroups.m_hierarchies)
            if (hierarchy.mount_path == match->path) {
                hierarchy.settings.push_back(setting);
                added = true;
            }
        if (!added)
            cgroups.m_hierarchies.push_back({ match->path, 1, TRY(open_root(match->path)), { setting } });
    }
    return cgroups;
}

Expected<void> JailCgroups::create() {
    for (size_t index = 0; index < m_hierarchies.size(); ++index)
        TRY(create_in(index).with_context(fmt::format("cgroup {}/{}", m_hierarchies[index].mount_path, m_relative)));
    return {};
}

Expected<void> JailCgroups::create_in(size_t index) {
    auto& hierarchy = m_hierarchies[index];
    int const root = hierarchy.root.get();
    std::set<std::string> controllers;
    for (auto const& setting : hierarchy.settings)
        controllers.insert(setting.controller());

    std::string prefix;
    for (auto const& component : split(m_relative, '/')) {
        auto const parent = prefix.empty() ? std::string(".") : prefix;
        if (hierarchy.version == 2) {
            // Controllers must be enabled in the parent's subtree before a child can use them.
            auto const enabled = split(TRY(read_control(root, parent + "/cgroup.subtree_control")), ' ');
            for (auto const& controller : controllers) {
                bool on = false;
                for (auto const& name : enabled)
                    on = on || name == controller;
                if (!on)
                    TRY(write_control(root, parent + "/cgroup.subtree_control", "+" + controller));
            }
        }
        prefix = prefix.empty() ? component : prefix + "/" + component;
        if (::mkdirat(root, prefix.c_str(), 0755) == 0) {
            m_created.push_back({ index, prefix });
            if (hierarchy.version == 1 && controllers.contains("cpuset")) {
                for (std::string const file : { "cpuset.cpus", "cpuset.mems" }) {
                    auto const inherited = TRY(read_control(root, parent + "/" + file));
                    if (!inherited.empty())
                        TRY(write_control(root, prefix + "/" + file, inherited));
                }
            }
        } else if (errno != EEXIST) {
            return Error::from_errno(fmt::format("creating {}", prefix));
        }
        struct stat status {};
        if (::fstatat(root, prefix.c_str(), &status, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(status.st_mode))
            return Error::format("{} is not a directory", prefix);
    }
    for (auto const& setting : hierarchy.settings)
        TRY(write_control(root, m_relative + "/" + setting.file, setting.value));
    return {};
}

Expected<void> JailCgroups::join() {
    for (auto const& hierarchy : m_hierarchies)
        TRY(write_control(hierarchy.root.get(), m_relative + "/cgroup.procs", "0")
                .with_context(fmt::format("joining cgroup {}/{}", hierarchy.mount_path, m_relative)));
    return {};
}

std::vector<std::string> JailCgroups::remove_created() {
    std::vector<std::string> left;
    // A cgroup with a member cannot be removed; back to the root, which accepts any process.
    for (auto const& hierarchy : m_hierarchies)
        (void)write_control(hierarchy.root.get(), "cgroup.procs", "0");
    for (auto created = m_created.rbegin(); created != m_created.rend(); ++created) {
        auto const& hierarchy = m_hierarchies[created->hierarchy];
        if (::unlinkat(hierarchy.root.get(), created->relative.c_str(), AT_REMOVEDIR) != 0)
            left.push_back(hierarchy.mount_path + "/" + created->relative);
    }
    m_created.clear();
    return left;
}

std::vector<std::string> JailCgroups::directories() const {
    std::vector<std::string> paths;
    for (auto const& hierarchy : m_hierarchies)
        paths.push_back(hierarchy.mount_path + "/" + m_relative);
    return paths;
}

} // namespace kvmm::jailer

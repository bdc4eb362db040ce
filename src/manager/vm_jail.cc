#include "manager/vm_jail.h"

#include "backends/disk/qcow2_file.h"
#include "manager/state_store.h"
#include "manager/tap_owner.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace kvmm {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// kvmm-jailer names the jail after its exec file's name: BASE/<exec name>/<id>/root.
constexpr char const* EXEC_NAME = "kvmm";
constexpr char const* OWNERS_FILE = "owners.json";
constexpr char const* TAPS_FILE = "taps.json";

// Below 1000 are the distribution's system accounts (Debian policy 9.2.2).
constexpr uint32_t FIRST_ALLOWED_UID = 1000;

Expected<uint32_t> parse_number(std::string_view text, std::string_view what) {
    uint32_t value = 0;
    auto const [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc() || end != text.data() + text.size())
        return Error::format("{} '{}' is not a number from 0 to 4294967295", what, text);
    return value;
}

constexpr char const* UID_SUFFIX = ".uid";

fs::path jail_dir(JailSettings const& settings, std::string const& id) { return settings.base / EXEC_NAME / id; }

struct OwnerRecord {
    std::string path;
    dev_t device { 0 };
    ino_t inode { 0 };
    uid_t uid { 0 };
    gid_t gid { 0 };
    mode_t mode { 0 };
};

json to_json(std::vector<OwnerRecord> const& records) {
    json list = json::array();
    for (auto const& record : records)
        list.push_back({ { "path", record.path },
                         { "device", record.device },
                         { "inode", record.inode },
                         { "uid", record.uid },
                         { "gid", record.gid },
                         { "mode", record.mode } });
    return list;
}

// Gives one file back to its recorded owner, if it is still the same file.
Expected<void> restore_owner(OwnerRecord const& record) {
    int const fd = ::open(record.path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return Error::from_errno(fmt::format("cannot open '{}' to restore its owner", record.path));
    struct stat status {};
    Expected<void> result;
    if (::fstat(fd, &status) != 0)
        result = Error::from_errno(fmt::format("fstat '{}'", record.path));
    else if (status.st_dev != record.device || status.st_ino != record.inode)
        result = Error::format("'{}' is no longer the file that was handed to the VM (inode {} instead of {}); its "
                               "owner is left as it is",
                               record.path, status.st_ino, record.inode);
    else if (::fchown(fd, record.uid, record.gid) != 0 || ::fchmod(fd, record.mode & 07777) != 0)
        result = Error::from_errno(fmt::format("cannot give '{}' back to {}:{}", record.path, record.uid, record.gid));
    ::close(fd);
    return result;
}

// Hands one host file into the jail root as a hard link `name`; a writable one is given to
// uid:gid first (its previous owner appended to `owners` and written to `owners_path`).
Expected<void> link_into_jail(std::string const& path, int root_fd, std::string const& name, bool writable,
                              dev_t base_device, uid_t uid, std::vector<OwnerRecord>& owners,
                              fs::path const& owners_path) {
    int const fd = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return Error::from_errno(fmt::format("cannot open '{}'", path));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer { fd };
    struct stat status {};
    if (::fstat(fd, &status) != 0)
        return Error::from_errno(fmt::format("fstat '{}'", path));
    if (!S_ISREG(status.st_mode))
        return Error::format("'{}' is not a regular file: a jailed VM gets its files as hard links", path);
    if (status.st_dev != base_device)
        return Error::format("'{}' is on another file system than the jail base; a jailed VM's files are hard-linked "
                             "into its jail: put them on the jail base's file system (or start kvmmd with another "
                             "--jail-base)",
                             path);
    if (writable) {
        owners.push_back({ path, status.st_dev, status.st_ino, status.st_uid, status.st_gid, status.st_mode });
        // Recorded before the change, so that a daemon that dies now still restores it.
        TRY(atomic_write_file(owners_path, to_json(owners).dump(), 0600));
        if (::fchown(fd, uid, uid) != 0 || ::fchmod(fd, (status.st_mode & 07777) | S_IRUSR | S_IWUSR) != 0)
            return Error::from_errno(fmt::format("cannot give '{}' to uid {}", path, uid));
    } else if ((status.st_mode & S_IROTH) == 0) {
        return Error::format("'{}' (mode {:o}) is not readable by others: a jailed VM's read-only files keep their "
                             "owner and must be world-readable",
                             path, status.st_mode & 07777);
    }
    // AT_EMPTY_PATH links exactly the inode checked above (root has CAP_DAC_READ_SEARCH).
    if (::linkat(fd, "", root_fd, name.c_str(), AT_EMPTY_PATH) != 0)
        return Error::from_errno(fmt::format("cannot link '{}' into the jail as '{}'", path, name));
    return {};
}

// Copies the whole of `from_fd` to `to_fd` (both at offset 0), leaving holes where the source
// reads as zeros: a saved VM's memory file is mostly holes (never-touched guest pages).
Expected<void> copy_contents(int from_fd, int to_fd, std::string const& from, std::string const& to) {
    struct stat status {};
    if (::fstat(from_fd, &status) != 0)
        return Error::from_errno(fmt::format("fstat '{}'", from));
    if (::ftruncate(to_fd, status.st_size) != 0)
        return Error::from_errno(fmt::format("cannot size '{}' to {} bytes", to, status.st_size));
    constexpr size_t BLOCK = 1 << 20;
    std::vector<char> buffer(BLOCK);
    for (off_t offset = 0; offset < status.st_size;) {
        ssize_t const got = ::pread(from_fd, buffer.data(), BLOCK, offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return Error::from_errno(fmt::format("cannot read '{}' at {}", from, offset));
        if (got == 0)
            return Error::format("'{}' ended at {} bytes of {} while it was copied", from, offset, status.st_size);
        bool const zeros = std::all_of(buffer.begin(), buffer.begin() + got, [](char c) { return c == 0; });
        for (ssize_t done = 0; !zeros && done < got;) {
            ssize_t const put = ::pwrite(to_fd, buffer.data() + done, got - done, offset + done);
            if (put < 0 && errno == EINTR)
                continue;
            if (put < 0)
                return Error::from_errno(fmt::format("cannot write '{}' at {}", to, offset + done));
            done += put;
        }
        offset += got;
    }
    if (::fsync(to_fd) != 0)
        return Error::from_errno(fmt::format("syncing '{}'", to));
    return {};
}

// Hands a saved VM's file into the jail for kvmm (running as uid) to restore from: a hard link
// given to uid for the run when it is on the jail base's file system, else a private copy.
Expected<void> hand_in_saved_file(std::string const& path, int root_fd, fs::path const& root, std::string const& name,
                                  dev_t base_device, uid_t uid, std::vector<OwnerRecord>& owners,
                                  fs::path const& owners_path) {
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0)
        return Error::from_errno(fmt::format("cannot open the saved file '{}'", path));
    if (status.st_dev == base_device)
        return link_into_jail(path, root_fd, name, true, base_device, uid, owners, owners_path);
    int const from_fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (from_fd < 0)
        return Error::from_errno(fmt::format("cannot open the saved file '{}'", path));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } from_closer { from_fd };
    if (::fstat(from_fd, &status) != 0 || !S_ISREG(status.st_mode))
        return Error::format("the saved file '{}' is not a regular file", path);
    std::string const copy = (root / name).string();
    int const to_fd = ::openat(root_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (to_fd < 0)
        return Error::from_errno(fmt::format("cannot create '{}'", copy));
    Closer to_closer { to_fd };
    if (::fchown(to_fd, uid, uid) != 0)
        return Error::from_errno(fmt::format("cannot give '{}' to uid {}", copy, uid));
    return copy_contents(from_fd, to_fd, path, copy);
}

// Names kvmmd itself puts at the top of the jail root (and kvmm-jailer's /dev): a backing
// file may not take one of them.
bool is_reserved_jail_name(std::string const& first_component) {
    static std::set<std::string> const reserved { "kernel",        "initrd",       "machine.json", "metrics.json",
                                                  "control.sock",  "console.sock", "vsock.sock",   "dev",
                                                  "snapshot.snap", "snapshot.mem" };
    if (reserved.contains(first_component))
        return true;
    return first_component.size() > 4 && first_component.starts_with("disk") &&
           first_component.find_first_not_of("0123456789", 4) == std::string::npos;
}

// Creates the directories of `relative` (a path below the jail root, its last component the
// file) root-owned 0755, each opened without following links.
Expected<void> make_parent_directories(int root_fd, fs::path const& relative, fs::path const& root) {
    int directory_fd = ::dup(root_fd);
    if (directory_fd < 0)
        return Error::from_errno("dup the jail root");
    fs::path made;
    for (auto const& component : relative.parent_path()) {
        made /= component;
        if (::mkdirat(directory_fd, component.c_str(), 0755) != 0 && errno != EEXIST) {
            int const saved_errno = errno;
            ::close(directory_fd);
            errno = saved_errno;
            return Error::from_errno(fmt::format("cannot create '{}'", (root / made).string()));
        }
        int const next = ::openat(directory_fd, component.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int const saved_errno = errno;
        ::close(directory_fd);
        if (next < 0) {
            errno = saved_errno;
            return Error::from_errno(fmt::format("cannot open '{}'", (root / made).string()));
        }
        directory_fd = next;
        // The umask may have taken bits away; the VM uid must be able to walk through.
        ::fchmod(directory_fd, 0755);
    }
    ::close(directory_fd);
    return {};
}

// A qcow2 disk's backing chain (qcow2.txt, "Header": backing_file_offset/size): kvmm opens each
// backing file by the name in the header above it, an absolute path as it is, a relative one
// against the directory of that image (qcow2_image.cc). In the jail the top image is
// `inside_path` (/diskN), so each backing file is linked into the jail root where that
// resolution lands: an absolute name at the same path under the root, a relative one relative
// to the image's path inside the jail. Backing files are opened read-only by kvmm, so they are
// handed in as read-only files (keep their owner, must be world-readable).
Expected<void> link_backing_chain(std::string const& host_path, std::string const& inside_path, int root_fd,
                                  fs::path const& root,
                                  std::function<Expected<void>(std::string const&, std::string const&)> const& link) {
    fs::path host_image = host_path;
    fs::path inside_image = inside_path;
    for (unsigned depth = 0;; ++depth) {
        auto const info = TRY(qcow2::read_file_info(host_image.string()).with_context("jail: backing chain"));
        if (!info.header.backing_file)
            return {};
        if (depth >= qcow2::MAX_BACKING_DEPTH)
            return Error::format("the backing chain of '{}' is deeper than {} images", host_path,
                                 qcow2::MAX_BACKING_DEPTH);
        fs::path const name = *info.header.backing_file;
        fs::path const host_backing = name.is_relative() ? host_image.parent_path() / name : name;
        // An absolute path's ".." at the root stays at the root, as the kernel resolves it.
        fs::path const inside_backing =
            (name.is_relative() ? inside_image.parent_path() / name : name).lexically_normal();
        fs::path const relative = inside_backing.relative_path();
        if (relative.empty() || relative.filename().empty() || relative.filename() == "." ||
            relative.filename() == "..")
            return Error::format("'{}' names the backing file '{}', which is no file path", host_image.string(),
                                 name.string());
        if (is_reserved_jail_name(relative.begin()->string()))
            return Error::format("'{}' names the backing file '{}', which would be '/{}' in the jail, a name the jail "
                                 "uses for its own files; a jailed VM cannot use it (run it unjailed, or rebase the "
                                 "image onto another name)",
                                 host_image.string(), name.string(), relative.string());
        struct stat existing {};
        if (::fstatat(root_fd, relative.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0) {
            struct stat wanted {};
            if (::stat(host_backing.c_str(), &wanted) != 0)
                return Error::from_errno(fmt::format("cannot open '{}'", host_backing.string()));
            if (existing.st_dev != wanted.st_dev || existing.st_ino != wanted.st_ino)
                return Error::format("two backing files would both be '/{}' in the jail ('{}' and another); a "
                                     "jailed VM cannot use both",
                                     relative.string(), host_backing.string());
            // Linked by another disk of this VM, with the rest of its chain.
            return {};
        }
        TRY(make_parent_directories(root_fd, relative, root));
        TRY(link(host_backing.string(), relative.string()));
        if (info.header.backing_format != qcow2::BackingFormat::Qcow2)
            return {};
        host_image = host_backing;
        inside_image = inside_backing;
    }
}

} // namespace

Expected<std::pair<uint32_t, uint32_t>> parse_uid_range(std::string_view text) {
    auto const colon = text.find(':');
    if (colon == std::string_view::npos)
        return Error::format("uid range '{}' is not START:COUNT", text);
    uint32_t const start = TRY(parse_number(text.substr(0, colon), "uid range start"));
    uint32_t const count = TRY(parse_number(text.substr(colon + 1), "uid range count"));
    if (start < FIRST_ALLOWED_UID)
        return Error::format("uid range start {} is below {}, among the system's own accounts", start,
                             FIRST_ALLOWED_UID);
    if (count == 0)
        return Error::format("uid range '{}' is empty", text);
    // uid_t(-1) means "unchanged" to chown(2) and setresuid(2).
    if (uint64_t { start } + count > UINT32_MAX)
        return Error::format("uid range '{}' goes past uid 4294967294", text);
    return std::pair { start, count };
}

fs::path uid_record(fs::path const& uid_dir, std::string const& name) { return uid_dir / (name + UID_SUFFIX); }

Expected<uint32_t> assign_vm_uid(fs::path const& uid_dir, std::string const& name, uint32_t start, uint32_t count) {
    TRY(validate_vm_name(name));
    std::error_code error;
    fs::create_directories(uid_dir, error);
    if (error)
        return Error::format("cannot create '{}': {}", uid_dir.string(), error.message());
    std::set<uint32_t> taken;
    for (auto const& entry : fs::directory_iterator(uid_dir, error)) {
        // Only records: NAME.uid (atomic_write_file's NAME.uid.tmp is a write in progress).
        if (entry.path().extension() != UID_SUFFIX)
            continue;
        std::ifstream file(entry.path());
        std::string text;
        std::getline(file, text);
        auto uid = parse_number(text, fmt::format("uid recorded in '{}'", entry.path().string()));
        if (!uid)
            return uid.error();
        if (entry.path().stem() == name) {
            if (*uid >= start && *uid - start < count)
                return *uid;
            continue; // recorded from another range: choose again
        }
        taken.insert(*uid);
    }
    if (error)
        return Error::format("cannot read '{}': {}", uid_dir.string(), error.message());
    // FNV-1a (64 bit): a stable position, so a VM tends to get the same uid in every state directory.
    uint64_t hash = 14695981039346656037ull;
    for (char const c : name)
        hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    for (uint64_t i = 0; i < count; ++i) {
        uint32_t const uid = start + static_cast<uint32_t>((hash + i) % count);
        if (taken.count(uid))
            continue;
        TRY(atomic_write_file(uid_record(uid_dir, name), fmt::format("{}\n", uid), 0600));
        return uid;
    }
    return Error::format("every uid of the range {}:{} is taken by a defined VM", start, count);
}

void forget_vm_uid(fs::path const& uid_dir, std::string const& name) {
    if (validate_vm_name(name))
        ::unlink(uid_record(uid_dir, name).c_str());
}

std::string jail_id(std::string const& name, uint32_t uid) {
    std::string id = name.substr(0, 48);
    for (char& c : id) {
        if (c == '_' || c == '.')
            c = '-';
    }
    return fmt::format("{}-{}", id, uid);
}

Expected<void> restore_jail(JailSettings const& settings, std::string const& id) {
    fs::path const directory = jail_dir(settings, id);
    std::error_code error;
    if (!fs::exists(fs::symlink_status(directory, error)))
        return {};
    Expected<void> result;
    std::ifstream file(directory / OWNERS_FILE);
    if (file) {
        auto const records = json::parse(file, nullptr, false);
        if (!records.is_array()) {
            result = Error::format("'{}' is unreadable: the owners of the VM's disks are not restored",
                                   (directory / OWNERS_FILE).string());
        } else {
            for (auto const& entry : records) {
                OwnerRecord record;
                try {
                    record = { entry.at("path").get<std::string>(), entry.at("device").get<dev_t>(),
                               entry.at("inode").get<ino_t>(),      entry.at("uid").get<uid_t>(),
                               entry.at("gid").get<gid_t>(),        entry.at("mode").get<mode_t>() };
                } catch (json::exception const& exception) {
                    result = Error::format("'{}': {}", (directory / OWNERS_FILE).string(), exception.what());
                    continue;
                }
                if (auto restored = restore_owner(record); !restored)
                    result = restored.error();
            }
        }
    }
    std::ifstream taps_file(directory / TAPS_FILE);
    if (taps_file) {
        auto const taps = json::parse(taps_file, nullptr, false);
        for (auto const& entry : taps.is_array() ? taps : json::array()) {
            try {
                TapRecord const record { entry.at("name").get<std::string>(), entry.at("created").get<bool>(),
                                         entry.at("owner").get<long long>(), entry.at("group").get<long long>() };
                if (auto restored = restore_tap(record); !restored)
                    result = restored.error();
            } catch (json::exception const& exception) {
                result = Error::format("'{}': {}", (directory / TAPS_FILE).string(), exception.what());
            }
        }
    }
    // remove_all() removes symlinks, never what they point to; the jailed process has ended.
    fs::remove_all(directory, error);
    if (error && result)
        result = Error::format("cannot remove the jail '{}': {}", directory.string(), error.message());
    return result;
}

Expected<PreparedJail> prepare_jail(JailSettings const& settings, std::string const& kvmm_binary,
                                    VmDefinition const& definition, uint32_t uid,
                                    std::vector<std::string> const& kvmm_arguments,
                                    std::optional<SavedRecord> const& restore_from) {
    PreparedJail jail;
    jail.id = jail_id(definition.name, uid);
    fs::path const directory = jail_dir(settings, jail.id);
    jail.root = jail_root(settings, jail.id);
    // A jail left by a run whose end kvmmd did not see (it was stopped, or crashed).
    if (auto stale = restore_jail(settings, jail.id); !stale)
        spdlog::warn("VM '{}': stale jail: {}", definition.name, stale.error().message());

    std::error_code error;
    fs::create_directories(settings.base / EXEC_NAME, error);
    if (!error)
        fs::create_directory(directory, error);
    if (!error)
        fs::create_directory(jail.root, error);
    if (error)
        return Error::format("cannot create the jail '{}': {}", jail.root.string(), error.message());
    // Everything below is undone on failure.
    struct Undo {
        JailSettings const& settings;
        std::string const& id;
        bool armed { true };
        ~Undo() {
            if (armed)
                (void)restore_jail(settings, id);
        }
    } undo { settings, jail.id };
    ::chmod(directory.c_str(), 0755);
    ::chmod(jail.root.c_str(), 0755); // kvmm-group members reach the console socket in it

    int const root_fd = ::open(jail.root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root_fd < 0)
        return Error::from_errno(fmt::format("cannot open '{}'", jail.root.string()));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer { root_fd };
    struct stat base_status {};
    if (::fstat(root_fd, &base_status) != 0)
        return Error::from_errno(fmt::format("fstat '{}'", jail.root.string()));

    std::vector<OwnerRecord> owners;
    fs::path const owners_path = directory / OWNERS_FILE;
    auto hand_in = [&](std::string const& path, std::string const& name, bool writable) -> Expected<std::string> {
        TRY(link_into_jail(path, root_fd, name, writable, base_status.st_dev, uid, owners, owners_path));
        return "/" + name;
    };
    jail.inside = definition;
    jail.inside.kernel = TRY(hand_in(definition.kernel, "kernel", false));
    if (definition.initrd)
        jail.inside.initrd = TRY(hand_in(*definition.initrd, "initrd", false));
    for (size_t i = 0; i < definition.disks.size(); ++i) {
        auto const& disk = definition.disks[i];
        jail.inside.disks[i].path = TRY(hand_in(disk.path, fmt::format("disk{}", i), !disk.read_only));
        if (disk.format == DiskConfig::Format::Qcow2)
            TRY(link_backing_chain(disk.path, jail.inside.disks[i].path, root_fd, jail.root,
                                   [&](std::string const& path, std::string const& name) -> Expected<void> {
                                       auto linked = hand_in(path, name, false);
                                       if (!linked)
                                           return linked.error();
                                       return {};
                                   }));
    }
    if (restore_from) {
        TRY(hand_in_saved_file(restore_from->snapshot_path, root_fd, jail.root, JAIL_SNAPSHOT_FILE, base_status.st_dev,
                               uid, owners, owners_path));
        TRY(hand_in_saved_file(restore_from->memory_path, root_fd, jail.root, JAIL_MEMORY_FILE, base_status.st_dev, uid,
                               owners, owners_path));
    }
    if (definition.vsock)
        jail.inside.vsock->uds_path = "/vsock.sock";
    // TAPs: the VM's uid must own them to attach without CAP_NET_ADMIN (tap_owner.h).
    json taps = json::array();
    for (auto const& nic : definition.nics) {
        auto const record = TRY(hand_tap_to(nic.tap_name, uid, uid));
        taps.push_back({ { "name", record.name },
                         { "created", record.created },
                         { "owner", record.owner },
                         { "group", record.group } });
        TRY(atomic_write_file(directory / TAPS_FILE, taps.dump(), 0600));
    }

    // The machine file and the metrics file belong to the VM's uid: kvmm reads the one and
    // rewrites the other.
    fs::path const machine_file = jail.root / "machine.json";
    jail.metrics_path = (jail.root / "metrics.json").string();
    TRY(atomic_write_file(machine_file, kvmm_machine_file(jail.inside), 0600));
    TRY(atomic_write_file(jail.metrics_path, "", 0600));
    for (auto const& path : { machine_file.string(), jail.metrics_path }) {
        if (::chown(path.c_str(), uid, uid) != 0)
            return Error::from_errno(fmt::format("cannot give '{}' to uid {}", path, uid));
    }
    jail.control_socket = (jail.root / "control.sock").string();
    jail.console_socket = (jail.root / "console.sock").string();

    jail.argv = { settings.jailer_binary, "--id", jail.id, "--exec-file", kvmm_binary, "--uid", std::to_string(uid),
                  "--gid", std::to_string(uid), "--chroot-base-dir", settings.base.string(),
                  // kvmm warns below 4096 descriptors (docs/jailer.md).
                  "--resource-limit", "no-file=4096", "--", "--config-file", "/machine.json", "--control-sock",
                  "/control.sock", "--console", "socket=/console.sock", "--metrics", "/metrics.json" };
    jail.argv.insert(jail.argv.end(), kvmm_arguments.begin(), kvmm_arguments.end());
    if (restore_from) {
        for (auto const* argument : { "--restore-snapshot", "/snapshot.snap", "--restore-memory", "/snapshot.mem" })
            jail.argv.emplace_back(argument);
    }
    undo.armed = false;
    return jail;
}

fs::path jail_root(JailSettings const& settings, std::string const& id) { return jail_dir(settings, id) / "root"; }

void remove_from_jail(fs::path const& root, std::string const& name) { ::unlink((root / name).c_str()); }

Expected<void> take_out_of_jail(fs::path const& root, std::string const& name, uid_t uid,
                                std::string const& destination) {
    std::string const inside = (root / name).string();
    int const root_fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root_fd < 0)
        return Error::from_errno(fmt::format("cannot open the jail '{}'", root.string()));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } root_closer { root_fd };
    int const fd = ::openat(root_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return Error::from_errno(fmt::format("cannot open '{}', which kvmm was to write", inside));
    Closer closer { fd };
    struct stat status {};
    if (::fstat(fd, &status) != 0)
        return Error::from_errno(fmt::format("fstat '{}'", inside));
    if (!S_ISREG(status.st_mode) || status.st_uid != uid || status.st_nlink != 1)
        return Error::format("'{}' is not the file kvmm wrote (a regular file of uid {} with one link; it has uid {}, "
                             "{} link(s), mode {:o}); it is left where it is",
                             inside, uid, status.st_uid, status.st_nlink, status.st_mode);
    // Root's before it leaves the jail, so the VM's uid never owns a file outside it.
    if (::fchown(fd, 0, 0) != 0 || ::fchmod(fd, 0600) != 0)
        return Error::from_errno(fmt::format("cannot give '{}' to root", inside));
    if (::renameat(root_fd, name.c_str(), AT_FDCWD, destination.c_str()) == 0) {
        // The name may have been swapped between the check and the rename: what arrived must be
        // the file checked.
        struct stat arrived {};
        if (::lstat(destination.c_str(), &arrived) != 0 || arrived.st_dev != status.st_dev ||
            arrived.st_ino != status.st_ino) {
            ::unlink(destination.c_str());
            return Error::format("'{}' was replaced while it was moved to '{}'; the VM's file is not saved", inside,
                                 destination);
        }
        return {};
    }
    if (errno != EXDEV)
        return Error::from_errno(fmt::format("cannot move '{}' to '{}'", inside, destination));
    // Another file system: a copy of the checked file, renamed into place once complete.
    std::string const temporary = destination + ".partial";
    ::unlink(temporary.c_str());
    int const to_fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (to_fd < 0)
        return Error::from_errno(fmt::format("cannot create '{}'", temporary));
    Closer to_closer { to_fd };
    auto copied = copy_contents(fd, to_fd, inside, temporary);
    if (copied && ::rename(temporary.c_str(), destination.c_str()) != 0)
        copied = Error::from_errno(fmt::format("cannot rename '{}' to '{}'", temporary, destination));
    if (!copied) {
        ::unlink(temporary.c_str());
        return copied.error();
    }
    ::unlinkat(root_fd, name.c_str(), 0);
    return {};
}

} // namespace kvmm

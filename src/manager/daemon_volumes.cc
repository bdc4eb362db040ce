// Daemon: the volume verbs (vol-create, vol-list, vol-info, vol-delete), clone, and the rule
// that keeps a backing file unwritten (docs/kvmmctl.md, "Clones and backing files"):
//   * a file that some image stacks on (a volume's or a VM disk's backing chain) is never
//     deleted by vol-delete and never opened for writing by a VM that kvmmd starts: start
//     refuses while one of the VM's writable disks is such a file;
//   * so clone, whose overlays stack on the source VM's disks, leaves the source VM unable to
//     start with those disks writable until the overlays are deleted (or the source's disks are
//     made read-only, or the clone's overlays are removed with vol-delete);
//   * kvmm itself opens every backing file read-only and locked shared.
// Lock order: a VM's operation lock, then m_volume_lock, then m_lock.
#include "manager/daemon.h"

#include "backends/disk/qcow2_file.h"
#include "manager/daemon_vm.h"
#include "manager/protocol.h"

#include <spdlog/spdlog.h>

#include <sys/stat.h>

namespace kvmm {

using nlohmann::json;

struct Daemon::DiskUse {
    std::string vm;
    bool active { false }; // running, paused or starting
    DiskConfig disk;
};

namespace {

VolumeFormat volume_format_of(DiskConfig::Format format) {
    return format == DiskConfig::Format::Qcow2 ? VolumeFormat::Qcow2 : VolumeFormat::Raw;
}

json volume_json(VolumeInfo const& volume) {
    json result { { "name", volume.name }, { "path", volume.path } };
    if (volume.problem) {
        result["error"] = *volume.problem;
        return result;
    }
    result["format"] = volume_format_name(volume.format);
    result["format_recorded"] = volume.format_recorded;
    result["capacity"] = volume.capacity;
    result["allocation"] = volume.allocation;
    result["backing_file"] = volume.backing_file ? json(*volume.backing_file) : json(nullptr);
    result["backing_format"] = volume.backing_format ? json(volume_format_name(*volume.backing_format)) : json(nullptr);
    result["cluster_size"] = volume.cluster_size ? json(*volume.cluster_size) : json(nullptr);
    return result;
}

bool same_file(std::optional<FileIdentity> const& a, std::optional<FileIdentity> const& b) {
    return a && b && *a == *b;
}

// The size a guest sees of the image at `path` in `format`: what an overlay of it must have.
Expected<uint64_t> image_capacity(std::string const& path, DiskConfig::Format format) {
    if (format == DiskConfig::Format::Qcow2)
        return TRY(qcow2::read_file_info(path)).header.size;
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0)
        return Error::from_errno(fmt::format("stat '{}'", path));
    if (!S_ISREG(status.st_mode))
        return Error::format("'{}' is not a regular file: clone makes overlays of image files only", path);
    return static_cast<uint64_t>(status.st_size);
}

} // namespace

std::vector<Daemon::DiskUse> Daemon::disk_uses() {
    MutexLock guard(m_lock);
    std::vector<DiskUse> uses;
    for (auto const& [name, vm] : m_vms) {
        for (auto const& disk : vm->definition.disks)
            uses.push_back({ name, vm->active() || vm->starting, disk });
    }
    return uses;
}

std::vector<std::pair<FileIdentity, std::string>> Daemon::backing_files(std::vector<DiskUse> const& uses) {
    std::vector<std::pair<FileIdentity, std::string>> found;
    auto add_chain = [&](std::string const& path, VolumeFormat format, std::string const& owner) {
        auto chain = backing_chain(path, format);
        if (!chain) {
            // An image whose chain cannot be read cannot be started either; say so and go on.
            spdlog::warn("{}: {}", owner, chain.error().message());
            return;
        }
        for (auto const& link : *chain) {
            if (auto identity = identity_of(link.path))
                found.emplace_back(*identity, owner);
        }
    };
    if (auto volumes = m_volumes->list()) {
        for (auto const& volume : *volumes) {
            if (!volume.problem)
                add_chain(volume.path, volume.format, fmt::format("volume '{}'", volume.name));
        }
    }
    for (auto const& use : uses)
        add_chain(use.disk.path, volume_format_of(use.disk.format),
                  fmt::format("disk '{}' of VM '{}'", use.disk.id, use.vm));
    return found;
}

Expected<void> Daemon::check_writable_disks_are_not_backing(VmDefinition const& definition) {
    MutexLock volumes(m_volume_lock);
    auto const backing = backing_files(disk_uses());
    for (auto const& disk : definition.disks) {
        if (disk.read_only)
            continue;
        auto const identity = identity_of(disk.path);
        for (auto const& [file, owner] : backing) {
            if (same_file(identity, file))
                return Error::format("VM '{}': disk '{}' ('{}') is the backing file of {}; writing it would corrupt "
                                     "that image. Make the disk read-only, or delete what stacks on it first",
                                     definition.name, disk.id, disk.path, owner);
        }
    }
    return {};
}

Expected<json> Daemon::volume_create(json const& request) {
    auto const name = TRY(required_string(request, "name"));
    auto const size_text = TRY(optional_string(request, "size"));
    auto const format_text = TRY(optional_string(request, "format"));
    auto const backing_name = TRY(optional_string(request, "backing"));
    TRY(validate_volume_name(name));
    VolumeStore::CreateRequest create;
    create.name = name;
    create.format = format_text ? TRY(parse_volume_format(*format_text)) : VolumeFormat::Qcow2;
    MutexLock volumes(m_volume_lock);
    if (backing_name) {
        if (create.format != VolumeFormat::Qcow2)
            return Error::format("volume '{}': --backing needs format qcow2, not {}", name,
                                 volume_format_name(create.format));
        auto const base = TRY(m_volumes->info(*backing_name).with_context("backing volume"));
        // A base that a running VM writes would change under the overlay.
        auto const base_identity = identity_of(base.path);
        for (auto const& use : disk_uses()) {
            if (use.active && !use.disk.read_only && same_file(identity_of(use.disk.path), base_identity))
                return Error::format("backing volume '{}' is disk '{}' of VM '{}', which is running and writes it; "
                                     "shut the VM off first",
                                     *backing_name, use.disk.id, use.vm);
        }
        create.backing = BackingLink { base.path, base.format };
        create.size = base.capacity;
    }
    if (size_text)
        create.size = TRY(parse_volume_size(*size_text));
    else if (!backing_name)
        return Error::format("volume '{}': a size is needed (e.g. \"10G\")", name);
    auto const created = TRY(m_volumes->create(create));
    return volume_json(created);
}

Expected<json> Daemon::volume_list() {
    MutexLock volumes(m_volume_lock);
    json list = json::array();
    for (auto const& volume : TRY(m_volumes->list()))
        list.push_back(volume_json(volume));
    return json { { "directory", m_volumes->directory().string() }, { "volumes", std::move(list) } };
}

Expected<json> Daemon::volume_info(json const& request) {
    auto const name = TRY(required_string(request, "name"));
    MutexLock volumes(m_volume_lock);
    auto const volume = TRY(m_volumes->info(name));
    json result = volume_json(volume);
    json used_by = json::array();
    auto const identity = identity_of(volume.path);
    for (auto const& use : disk_uses()) {
        if (same_file(identity_of(use.disk.path), identity))
            used_by.push_back({ { "vm", use.vm }, { "disk", use.disk.id } });
    }
    result["used_by"] = std::move(used_by);
    return result;
}

Expected<json> Daemon::volume_delete(json const& request) {
    auto const name = TRY(required_string(request, "name"));
    TRY(validate_volume_name(name));
    MutexLock volumes(m_volume_lock);
    auto const path = m_volumes->path_of(name).string();
    auto const identity = identity_of(path);
    if (!identity)
        return Error::format("volume '{}' does not exist", name);
    auto const uses = disk_uses();
    for (auto const& use : uses) {
        if (same_file(identity_of(use.disk.path), identity))
            return Error::format("volume '{}' is disk '{}' of VM '{}': undefine the VM or edit its disks first", name,
                                 use.disk.id, use.vm);
    }
    for (auto const& [file, owner] : backing_files(uses)) {
        if (same_file(identity, file))
            return Error::format("volume '{}' is the backing file of {}: delete that first", name, owner);
    }
    TRY(m_volumes->remove(name));
    return json { { "name", name } };
}

Expected<json> Daemon::clone(json const& request) {
    auto const source_name = TRY(required_string(request, "name"));
    auto const new_name = TRY(required_string(request, "new_name"));
    TRY(validate_vm_name(new_name));
    auto source = TRY(find(source_name));
    // Held until the clone is defined: the source cannot start meanwhile.
    MutexLock operation(source->operation);
    VmDefinition definition;
    {
        MutexLock guard(m_lock);
        if (source->active() || source->starting)
            return Error::format("VM '{}' is {}: clone needs it shut off (its disks must not change under the "
                                 "clone's overlays)",
                                 source_name, source->starting ? "starting" : source->state);
        if (m_vms.contains(new_name))
            return Error::format("VM '{}' is already defined", new_name);
        definition = source->definition;
    }
    definition.name = new_name;
    definition.autostart = false;

    MutexLock volumes(m_volume_lock);
    // Everything is checked before the first overlay is written.
    std::vector<VolumeStore::CreateRequest> overlays;
    for (auto& disk : definition.disks) {
        if (disk.read_only)
            continue; // shared as it is: nothing writes it
        VolumeStore::CreateRequest overlay;
        overlay.name = fmt::format("{}-{}", new_name, disk.id);
        TRY(validate_volume_name(overlay.name).with_context(fmt::format("disk '{}'", disk.id)));
        if (identity_of(m_volumes->path_of(overlay.name).string()))
            return Error::format("volume '{}' (for disk '{}' of the clone) already exists", overlay.name, disk.id);
        overlay.format = VolumeFormat::Qcow2;
        auto const absolute = std::filesystem::absolute(disk.path).lexically_normal().string();
        overlay.size = TRY(image_capacity(absolute, disk.format).with_context(fmt::format("disk '{}'", disk.id)));
        TRY(backing_chain(absolute, volume_format_of(disk.format)).with_context(fmt::format("disk '{}'", disk.id)));
        overlay.backing = BackingLink { absolute, volume_format_of(disk.format) };
        disk.path = m_volumes->path_of(overlay.name).string();
        disk.format = DiskConfig::Format::Qcow2;
        overlays.push_back(std::move(overlay));
    }
    TRY(validate_definition(definition));

    std::vector<std::string> created;
    VolumeStore& store = *m_volumes;
    auto undo = [&](Error error) -> Error {
        for (auto const& name : created)
            (void)store.remove(name);
        return error;
    };
    json volumes_made = json::array();
    for (auto const& overlay : overlays) {
        auto made = store.create(overlay);
        if (!made)
            return undo(made.error());
        created.push_back(overlay.name);
        volumes_made.push_back(overlay.name);
    }
    MutexLock guard(m_lock);
    if (m_vms.contains(new_name))
        return undo(Error::format("VM '{}' is already defined", new_name));
    if (auto saved = m_store.save_definition(definition); !saved)
        return undo(saved.error());
    m_vms[new_name] = std::make_shared<Vm>(std::move(definition), m_options.max_restarts, m_options.restart_window);
    return json { { "name", new_name }, { "source", source_name }, { "volumes", std::move(volumes_made) } };
}

} // namespace kvmm

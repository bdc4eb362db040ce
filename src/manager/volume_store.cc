#include "manager/volume_store.h"

#include "backends/disk/qcow2_file.h"
#include "base/unique_fd.h"
#include "config/vm_config.h"
#include "manager/state_store.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

namespace kvmm {

namespace fs = std::filesystem;

namespace {

constexpr size_t MAX_VOLUME_NAME_LENGTH = 64;

Expected<void> sync_directory(fs::path const& directory) {
    UniqueFd fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.is_valid() || ::fsync(fd.get()) != 0)
        return Error::from_errno(fmt::format("fsync of directory '{}'", directory.string()));
    return {};
}

// A sparse raw file of `size` bytes at `path` (which must not exist), synced.
Expected<void> create_raw(std::string const& path, uint64_t size) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("cannot create '{}'", path));
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0 || ::fsync(fd.get()) != 0) {
        auto error = Error::from_errno(fmt::format("sizing '{}' to {} bytes", path, size));
        ::unlink(path.c_str());
        return error;
    }
    return {};
}

VolumeFormat volume_format_of(qcow2::BackingFormat format) {
    return format == qcow2::BackingFormat::Qcow2 ? VolumeFormat::Qcow2 : VolumeFormat::Raw;
}

} // namespace

std::string_view volume_format_name(VolumeFormat format) { return format == VolumeFormat::Qcow2 ? "qcow2" : "raw"; }

Expected<VolumeFormat> parse_volume_format(std::string_view text) {
    if (text == "raw")
        return VolumeFormat::Raw;
    if (text == "qcow2")
        return VolumeFormat::Qcow2;
    return Error::format("volume format '{}' is not one of raw, qcow2", text);
}

Expected<void> validate_volume_name(std::string_view name) {
    if (name.empty() || name.size() > MAX_VOLUME_NAME_LENGTH)
        return Error::format("volume name '{}' must be 1 to {} characters long, it has {}", name,
                             MAX_VOLUME_NAME_LENGTH, name.size());
    if (name.front() == '.')
        return Error::format("volume name '{}' must not start with '.' (dot-files belong to kvmmd)", name);
    for (char const c : name) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-')
            return Error::format("volume name '{}' contains '{}'; only letters, digits, '_', '.' and '-' are allowed",
                                 name, c);
    }
    return {};
}

Expected<uint64_t> parse_volume_size(std::string_view text) {
    auto const bytes = TRY(parse_size_with_suffix(text, "volume", 1));
    if (bytes > qcow2::MAX_VIRTUAL_SIZE)
        return Error::format("volume size '{}' is larger than {} bytes", text, qcow2::MAX_VIRTUAL_SIZE);
    if (bytes == 0 || bytes % 512 != 0)
        return Error::format("volume size '{}' ({} bytes) must be a positive multiple of 512 bytes", text, bytes);
    return bytes;
}

std::optional<FileIdentity> identity_of(std::string const& path) {
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0)
        return std::nullopt;
    return FileIdentity { status.st_dev, status.st_ino };
}

Expected<std::vector<BackingLink>> backing_chain(std::string const& path, VolumeFormat format) {
    std::vector<BackingLink> chain;
    std::vector<FileIdentity> seen;
    if (auto identity = identity_of(path))
        seen.push_back(*identity);
    std::string current = path;
    while (format == VolumeFormat::Qcow2) {
        auto const info = TRY(qcow2::read_file_info(current));
        if (!info.header.backing_file)
            break;
        if (chain.size() >= qcow2::MAX_BACKING_DEPTH)
            return Error::format("'{}': the backing chain is deeper than {} images", path, qcow2::MAX_BACKING_DEPTH);
        fs::path backing(*info.header.backing_file);
        if (backing.is_relative())
            backing = fs::path(current).parent_path() / backing;
        format = volume_format_of(info.header.backing_format.value_or(qcow2::BackingFormat::Raw));
        auto const identity = identity_of(backing.string());
        if (!identity)
            return Error::format("'{}': backing file '{}' does not exist", current, backing.string());
        if (std::find(seen.begin(), seen.end(), *identity) != seen.end())
            return Error::format("'{}': backing file '{}' is already in the chain (a loop)", current, backing.string());
        seen.push_back(*identity);
        chain.push_back({ backing.string(), format });
        current = backing.string();
    }
    return chain;
}

Expected<VolumeStore> VolumeStore::open(fs::path directory) {
    std::error_code error;
    fs::create_directories(directory, error);
    if (error)
        return Error(fmt::format("creating the storage directory '{}': {}", directory.string(), error.message()),
                     error.value());
    ::chmod(directory.c_str(), 0700);
    return VolumeStore(std::move(directory));
}

fs::path VolumeStore::record_path(std::string_view name) const { return m_directory / fmt::format(".{}.json", name); }

std::optional<VolumeFormat> VolumeStore::recorded_format(std::string_view name) const {
    std::ifstream file(record_path(name));
    if (!file)
        return std::nullopt;
    std::stringstream text;
    text << file.rdbuf();
    auto const record = nlohmann::json::parse(text.str(), nullptr, false);
    if (record.is_discarded() || !record.is_object() || !record.contains("format") || !record["format"].is_string())
        return std::nullopt;
    auto format = parse_volume_format(record["format"].get<std::string>());
    return format ? std::optional(*format) : std::nullopt;
}

Expected<VolumeInfo> VolumeStore::create(CreateRequest const& request) {
    TRY(validate_volume_name(request.name));
    auto const path = path_of(request.name);
    if (fs::exists(fs::symlink_status(path)))
        return Error::format("volume '{}' already exists", request.name);
    if (request.backing && request.format != VolumeFormat::Qcow2)
        return Error::format("volume '{}': only a qcow2 volume can have a backing file", request.name);
    // The record first: a crash after it and before the rename leaves a record without a volume,
    // which list() ignores and the next create of the name replaces.
    nlohmann::json const record { { "format", volume_format_name(request.format) } };
    TRY(atomic_write_file(record_path(request.name), record.dump() + "\n", 0600));
    auto const temporary = m_directory / fmt::format(".{}.creating", request.name);
    ::unlink(temporary.c_str()); // left by a crash in an earlier create
    Expected<void> written;
    if (request.format == VolumeFormat::Raw) {
        written = create_raw(temporary.string(), request.size);
    } else {
        qcow2::CreateOptions options;
        if (request.backing) {
            options.backing_file = request.backing->path;
            options.backing_format = request.backing->format == VolumeFormat::Qcow2 ? qcow2::BackingFormat::Qcow2
                                                                                    : qcow2::BackingFormat::Raw;
        }
        written = qcow2::create_image(temporary.string(), request.size, options)
                      .with_context(fmt::format("volume '{}'", request.name));
    }
    if (written && ::renameat2(AT_FDCWD, temporary.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
        written = Error::from_errno(
            fmt::format("volume '{}': renaming '{}' to '{}'", request.name, temporary.string(), path.string()));
        ::unlink(temporary.c_str());
    }
    if (!written) {
        // No stale record may describe a file that someone places under the name later.
        if (!fs::exists(fs::symlink_status(path)))
            ::unlink(record_path(request.name).c_str());
        return written.error();
    }
    TRY(sync_directory(m_directory));
    return info(request.name);
}

Expected<VolumeInfo> VolumeStore::info(std::string_view name) const {
    TRY(validate_volume_name(name));
    auto const path = path_of(name);
    struct stat status {};
    if (::lstat(path.c_str(), &status) != 0)
        return Error::format("volume '{}' does not exist", name);
    if (!S_ISREG(status.st_mode))
        return Error::format("volume '{}' ('{}') is not a regular file", name, path.string());
    VolumeInfo volume;
    volume.name = std::string(name);
    volume.path = path.string();
    volume.allocation = static_cast<uint64_t>(status.st_blocks) * 512;
    volume.capacity = static_cast<uint64_t>(status.st_size);
    auto const recorded = recorded_format(name);
    volume.format_recorded = recorded.has_value();
    // Describing a file placed by hand reads its magic; see the header comment.
    volume.format = recorded.value_or(qcow2::has_qcow2_magic(path) ? VolumeFormat::Qcow2 : VolumeFormat::Raw);
    if (volume.format == VolumeFormat::Qcow2) {
        auto const file = TRY(qcow2::read_file_info(path.string()).with_context(fmt::format("volume '{}'", name)));
        volume.capacity = file.header.size;
        volume.cluster_size = static_cast<uint32_t>(file.header.cluster_size());
        volume.backing_file = file.header.backing_file;
        if (file.header.backing_format)
            volume.backing_format = volume_format_of(*file.header.backing_format);
    }
    return volume;
}

Expected<std::vector<VolumeInfo>> VolumeStore::list() const {
    std::vector<std::string> names;
    std::error_code error;
    for (auto const& entry : fs::directory_iterator(m_directory, error)) {
        auto name = entry.path().filename().string();
        if (validate_volume_name(name))
            names.push_back(std::move(name));
    }
    if (error)
        return Error(fmt::format("listing '{}': {}", m_directory.string(), error.message()), error.value());
    std::sort(names.begin(), names.end());
    std::vector<VolumeInfo> volumes;
    for (auto const& name : names) {
        auto volume = info(name);
        if (!volume) {
            VolumeInfo unreadable;
            unreadable.name = name;
            unreadable.path = path_of(name).string();
            unreadable.problem = volume.error().message();
            volumes.push_back(std::move(unreadable));
            continue;
        }
        volumes.push_back(std::move(*volume));
    }
    return volumes;
}

Expected<void> VolumeStore::remove(std::string_view name) {
    TRY(validate_volume_name(name));
    auto const path = path_of(name);
    if (::unlink(path.c_str()) != 0)
        return errno == ENOENT ? Error::format("volume '{}' does not exist", name)
                               : Error::from_errno(fmt::format("removing volume '{}' ('{}')", name, path.string()));
    ::unlink(record_path(name).c_str());
    TRY(sync_directory(m_directory));
    return {};
}

} // namespace kvmm

// VolumeStore: the storage directory that kvmmd owns (STATE_DIR/volumes), holding the disk
// images behind kvmmctl's vol-create, vol-list, vol-info and vol-delete (virsh's vol verbs)
// and the overlays that clone makes.
//
// A volume is the file STORAGE/NAME, raw or qcow2. Names follow the VM name rules (1..64 of
// [A-Za-z0-9_.-], not starting with '.'), so a name is never a path, "." or ".."; dot-files
// belong to the store: STORAGE/.NAME.json records the format kvmmd created the volume with,
// and .NAME.creating is an image being written (renamed to NAME when complete, so a crash
// never leaves a half-written volume under a volume's name).
//
// Format: a volume's format is the recorded one. A file placed in the directory by hand (e.g.
// made by qemu-img) has no record; its format is then read from its first bytes, as libvirt's
// directory pools do, and reported as detected. A raw volume that a guest has written keeps its
// recorded "raw", however its content looks: the format of a guest-writable image is never
// guessed (QEMU's classic hole, issue 13).
//
// Backing references: a qcow2 image names its backing file; kvmmd must not delete a file that
// is some image's backing file, and must not let a VM write one (clone's rule, docs/kvmmctl.md).
// backing_chain() follows an image's chain (read-only header reads, bounded depth, loops
// refused) so the daemon can find every file that something stacks on.
//
// Threading: not thread-safe; the daemon serialises every call with its volume lock.
#pragma once

#include "backends/disk/qcow2_format.h"
#include "base/expected.h"

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm {

enum class VolumeFormat { Raw, Qcow2 };

std::string_view volume_format_name(VolumeFormat format);
Expected<VolumeFormat> parse_volume_format(std::string_view text);

// 1..64 characters of [A-Za-z0-9_.-], not starting with '.'.
Expected<void> validate_volume_name(std::string_view name);

// "10G", "512M", "4096" (bytes, as qemu-img), K/M/G/T powers of 1024 with an optional "B" or
// "iB"; a positive multiple of 512 bytes (the block device's sector).
Expected<uint64_t> parse_volume_size(std::string_view text);

// A file's identity (st_dev, st_ino): how references are compared, whatever path names them.
struct FileIdentity {
    dev_t device { 0 };
    ino_t inode { 0 };
    bool operator==(FileIdentity const&) const = default;
};
std::optional<FileIdentity> identity_of(std::string const& path);

// One image below another in a chain: `path` (as resolved) and its format.
struct BackingLink {
    std::string path;
    VolumeFormat format { VolumeFormat::Raw };
};

// The backing chain of the image at `path` in `format`, nearest first: empty for raw or for a
// qcow2 image without a backing file. Relative names resolve against the naming image's
// directory (as kvmm and QEMU open them). Errors: a header that does not parse, a loop, a chain
// deeper than qcow2::MAX_BACKING_DEPTH (16), each naming the file.
Expected<std::vector<BackingLink>> backing_chain(std::string const& path, VolumeFormat format);

struct VolumeInfo {
    std::string name;
    std::string path;
    VolumeFormat format { VolumeFormat::Raw };
    bool format_recorded { true };           // false: read from the file (placed by hand)
    uint64_t capacity { 0 };                 // the size the guest sees
    uint64_t allocation { 0 };               // bytes of the host file system it takes (st_blocks)
    std::optional<std::string> backing_file; // as the header names it
    std::optional<VolumeFormat> backing_format;
    std::optional<uint32_t> cluster_size; // qcow2
    std::optional<std::string> problem;   // list(): why the file could not be described
};

class VolumeStore {
public:
    // Creates the directory (0700) if it is missing.
    static Expected<VolumeStore> open(std::filesystem::path directory);

    std::filesystem::path const& directory() const { return m_directory; }
    std::filesystem::path path_of(std::string_view name) const { return m_directory / std::string(name); }

    struct CreateRequest {
        std::string name;
        uint64_t size { 0 };
        VolumeFormat format { VolumeFormat::Qcow2 };
        // A qcow2 overlay's backing file: an absolute path and its format.
        std::optional<BackingLink> backing;
    };
    // Creates volume `name` (an error if it exists): raw as a sparse file, qcow2 with
    // qcow2::create_image; the record first, then the image under a temporary name, then the
    // rename with RENAME_NOREPLACE, so two creates of one name cannot both succeed.
    Expected<VolumeInfo> create(CreateRequest const& request);

    // The volumes, sorted by name. A file that cannot be described (e.g. a corrupt qcow2 header)
    // is listed with its problem rather than hidden or failing the whole list.
    Expected<std::vector<VolumeInfo>> list() const;
    Expected<VolumeInfo> info(std::string_view name) const;

    // Removes the volume and its record. The caller has checked that nothing uses it.
    Expected<void> remove(std::string_view name);

private:
    explicit VolumeStore(std::filesystem::path directory) : m_directory(std::move(directory)) {}

    std::filesystem::path record_path(std::string_view name) const;
    std::optional<VolumeFormat> recorded_format(std::string_view name) const;

    std::filesystem::path m_directory;
};

} // namespace kvmm

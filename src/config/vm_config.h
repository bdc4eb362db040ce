// VmConfig: everything needed to build and run one VM, filled from the command
// line (and later the API/config file), validated before anything is built so
// that bad input fails fast with a message that names the field and the value.
#pragma once

#include "base/expected.h"
#include "base/rate_limiter.h" // TokenBucketConfig, RateLimitConfig

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm {

struct ConsoleConfig {
    // Socket: a Unix socket server (vmm/console_server.h) that any number of clients attach to.
    enum class Kind { Stdio, File, None, Socket } kind { Kind::Stdio };
    std::string path; // for Kind::File and Kind::Socket

    // Parses "stdio", "none", "file=PATH" or "socket=PATH".
    static Expected<ConsoleConfig> parse(std::string_view text);
};

struct DiskConfig {
    // How guest writes reach the disk. WriteBack: the guest sees a volatile write cache
    // (VIRTIO_BLK_F_FLUSH) and its FLUSH requests are fdatasync()ed. WriteThrough: every write
    // completes only after fdatasync(), so data is on the disk when the guest sees success.
    enum class CacheMode { WriteBack, WriteThrough };
    // How requests are executed: io_uring (the default) or synchronous preadv/pwritev on the
    // event-loop thread (the fallback when io_uring is unavailable).
    enum class Engine { IoUring, Sync };
    // The image format, always as configured: a guest-writable image's format is never probed.
    enum class Format { Raw, Qcow2 };

    std::string id;
    std::string path;
    bool read_only { false };
    CacheMode cache { CacheMode::WriteBack };
    Engine engine { Engine::IoUring };
    Format format { Format::Raw };
    std::optional<std::string> serial; // VIRTIO_BLK_T_GET_ID; defaults to the id
    RateLimitConfig rate_limit;
    bool is_root_device { false }; // Firecracker's is_root_device: adds root=/dev/vdX to the cmdline
    // Write recording (test and debugging use, off by default): every write, discard,
    // write-zeroes and flush the guest's requests complete is appended to this new file
    // (backends/disk/write_log_format.h), for kvmm-crash-check.
    std::optional<std::string> record_path;

    bool operator==(DiskConfig const&) const = default;
};

using MacAddress = std::array<uint8_t, 6>; // as config/mac_address.h

struct NetConfig {
    std::string id;
    std::string tap_name;      // opened (and created if missing) by name, or
    std::optional<int> tap_fd; // an already-open TAP fd inherited from the parent
    std::optional<MacAddress> mac;
    RateLimitConfig rx_rate_limit;
    RateLimitConfig tx_rate_limit;

    bool operator==(NetConfig const&) const = default;
};

struct VsockConfig {
    uint32_t guest_cid { 3 };
    std::string uds_path; // host side: Firecracker's hybrid vsock Unix socket

    bool operator==(VsockConfig const&) const = default;
};

struct BalloonConfig {
    uint64_t target_mib { 0 };
    bool deflate_on_oom { false };
    uint32_t stats_polling_interval_s { 0 }; // 0: statistics off
    bool free_page_reporting { false };

    bool operator==(BalloonConfig const&) const = default;
};

struct RngConfig {
    RateLimitConfig rate_limit;

    bool operator==(RngConfig const&) const = default;
};

struct VmConfig {
    // Firmware image (--firmware): mapped so that it ends at 4 GiB, and the machine starts at
    // its reset vector. Without it, kernel_path is required and booted directly. With both,
    // the kernel, initrd and command line are handed to the firmware over fw_cfg (as QEMU's
    // -kernel does with firmware), for firmware that loads them.
    std::optional<std::string> firmware_path;
    std::string kernel_path;
    std::optional<std::string> initrd_path;
    std::string cmdline;
    uint32_t vcpu_count { 1 };
    // 1, or 2 (Firecracker's machine-config smt): the guest sees pairs of consecutive vCPUs as
    // the two threads of one core; vcpu_count must then be 1 or even.
    uint32_t threads_per_core { 1 };
    uint64_t memory_size { 128ull << 20 };
    ConsoleConfig console;
    bool transparent_huge_pages { false };
    std::vector<DiskConfig> disks;
    std::vector<NetConfig> nets;
    std::optional<VsockConfig> vsock;
    std::optional<BalloonConfig> balloon;
    std::optional<RngConfig> rng;
    bool virtio_console { false }; // a virtio-console (hvc0) beside the serial port
    // Firecracker's machine-config track_dirty_pages: the hypervisor logs the pages the vCPUs
    // write and guest memory the pages devices write, so that Diff snapshots can be taken.
    bool track_dirty_pages { false };
};

// Parses sizes such as "128M", "1G", "512k", "1.5G" is not accepted; a bare number is MiB
// (as QEMU's -m and Firecracker's mem_size_mib). Suffixes K, M, G, T (powers of 1024, case-insensitive,
// optional trailing "iB"/"B"). Errors name the text.
Expected<uint64_t> parse_memory_size(std::string_view text);
// The same grammar for any size: a bare number counts `bare_unit` bytes (1 for disk volumes, as
// qemu-img); "B" is bytes. `what` names the value in errors ("memory", "volume").
Expected<uint64_t> parse_size_with_suffix(std::string_view text, std::string_view what, uint64_t bare_unit);

// Guest RAM that validate() accepts. The x86-64 memory layout (arch/x86_64/layout.h) has the
// same bounds, and vmm asserts at compile time that they agree; config cannot include arch.
inline constexpr uint64_t MIN_GUEST_MEMORY_SIZE = 16ull << 20;
inline constexpr uint64_t MAX_GUEST_MEMORY_SIZE = 1024ull << 30;

// Linux network interface names are at most IFNAMSIZ - 1 = 15 bytes.
inline constexpr size_t MAX_TAP_NAME_LENGTH = 15;

// Virtio devices one machine can hold: each takes an IOAPIC line of its own (24 pins, less the
// PC platform's 0, 2, 3 and 8 and the lines of COM1 and the keyboard; vmm/device_manager.cc
// checks at compile time that its pool has exactly this size). validate() refuses more, so
// that every entry point (kvmmd's define included) refuses what the machine builder would.
inline constexpr size_t MAX_VIRTIO_DEVICES = 18;

// Largest command line we accept from the user; the kernel image may impose a smaller limit
// (bzImage cmdline_size), which the loader checks.
inline constexpr size_t MAX_CMDLINE_LENGTH = 64 * 1024 - 1;

// The one validation of a whole machine configuration, used by every entry point: kvmm's
// flags, the API's InstanceStart and --config-file, and kvmmd's definitions. Checks ranges
// that do not need the hypervisor: vCPU count >= 1, memory size within the architecture's
// limits (16 MiB to 1 TiB, 4 KiB multiples), command line length, then validate_devices().
// `max_vcpus` comes from the hypervisor (kvmmd passes its own definition limit).
Expected<void> validate(VmConfig const& config, uint32_t max_vcpus);
// The command line the guest gets: the configured one, plus "root=/dev/vdX ro|rw" for a disk
// marked as the root device (disks are the first virtio devices, so disk i is /dev/vd('a'+i)),
// unless the command line already names a root (Firecracker's is_root_device does the same).
std::string effective_cmdline(VmConfig const& config);

// The device part of validate(): paths without control characters (base/path.h), at most
// MAX_VIRTIO_DEVICES virtio devices, ids unique per device kind, one root disk, complete network settings with TAP
// names (at most 15 bytes) and MACs unique across interfaces, complete vsock settings, a balloon target within guest
// RAM.
Expected<void> validate_devices(VmConfig const& config);

// Disks, network interfaces, vsock, balloon, rng and virtio-console together.
size_t virtio_device_count(VmConfig const& config);

// The network part of validate_devices(), for the API's PUT /network-interfaces, which checks
// the interfaces as soon as one changes.
Expected<void> validate_network_interfaces(std::vector<NetConfig> const& nets);

// Firecracker's rule: the balloon may not ask for more than the guest's memory (resources.rs
// set_balloon_device and Vmm::update_balloon_config, BalloonConfigError::TooManyPagesRequested).
Expected<void> check_balloon_fits(uint64_t balloon_mib, uint64_t memory_mib);

} // namespace kvmm

// VmDefinition: one VM as the manager (kvmmd) stores it, parsed from and written to TOML,
// and turned into the argument vector of the kvmm process that runs it.
//
// The TOML layout (one file per VM):
//   name = "web1"                     # 1..64 of [A-Za-z0-9_.-], not starting with '.'
//   vcpus = 2
//   memory = "512M"                   # or an integer number of MiB
//   kernel = "/var/lib/kvmm/vmlinux"
//   initrd = "/var/lib/kvmm/initrd"   # optional
//   cmdline = "console=ttyS0"
//   autostart = false
//   restart = "never"                 # "never" | "on-failure" | "always"
//   rng = true
//   [[disk]]  path, readonly, cache, id, serial, root  (+ kvmm's engine, bw, bw_burst, iops, iops_burst,
//             allow_host_device_write: a host block device may be written; see check_host_block_devices)
//   [[nic]]   tap, mac, id                             (+ kvmm's rx_bw, tx_bw)
//   [vsock]   cid, uds
//   [resources] cpu_weight, cpu_quota_percent, memory_limit  (string or integer MiB)
//   [pinning] vcpu0 = [0, 1], vcpu1 = [2]
// Each device table is parsed once, by kvmm's own option parser (config/device_options.h),
// into the config library's types, and the whole definition is checked by the config
// library's validate(), so a definition that kvmm would reject at start is rejected when it is
// defined. The TOML layout is unchanged from the string-holding definitions of older kvmmd
// versions, so their state directories load as they are. Unknown keys are errors that name
// the key and its table.
//
// Threading: plain values and pure functions; no shared state.
#pragma once

#include "base/expected.h"
#include "config/vm_config.h"

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm {

struct VmDefinition {
    enum class RestartPolicy { Never, OnFailure, Always };

    std::string name;
    uint32_t vcpus { 1 };
    uint64_t memory_size { 128ull << 20 }; // bytes, a whole number of MiB (TOML: "512M" or MiB)
    std::string kernel;
    std::optional<std::string> initrd;
    std::string cmdline;
    // Typed, as kvmm builds them; an interface always names its TAP (no inherited fd).
    std::vector<DiskConfig> disks;
    // Ids of the disks whose [[disk]] table says allow_host_device_write = true.
    std::set<std::string> host_device_write_disks;
    std::vector<NetConfig> nics;
    std::optional<VsockConfig> vsock;
    bool rng { false };
    bool autostart { false };
    RestartPolicy restart { RestartPolicy::Never };
    std::optional<uint32_t> cpu_weight;        // 1..10000, cgroup v2 semantics (v1: shares = weight*1024/100)
    std::optional<uint32_t> cpu_quota_percent; // 1..(100*vcpus)
    std::optional<uint64_t> memory_limit_mib;
    // vcpu i -> host CPUs. An empty inner list (or i >= size()) leaves vCPU i unpinned;
    // parse_definition() trims trailing empty entries so that definitions compare equal.
    std::vector<std::vector<uint32_t>> vcpu_pins;

    bool operator==(VmDefinition const&) const = default;
};

// Limits that do not depend on the host. kvmm checks the hypervisor's own vCPU limit at start.
inline constexpr uint32_t MAX_DEFINITION_VCPUS = 255;
inline constexpr uint32_t MIN_CPU_WEIGHT = 1;
inline constexpr uint32_t MAX_CPU_WEIGHT = 10000;
inline constexpr size_t MAX_VM_NAME_LENGTH = 64;
inline constexpr uint32_t MAX_HOST_CPU = 1023; // CPU_SETSIZE - 1

// 1..64 characters of [A-Za-z0-9_.-], not starting with '.'; the name becomes a file name,
// a cgroup name and part of socket paths, so path separators and "."/".." are impossible.
Expected<void> validate_vm_name(std::string_view name);

// The [[disk]] key that lets a definition open a host block device read-write.
inline constexpr std::string_view HOST_DEVICE_WRITE_KEY = "allow_host_device_write";

// kvmmd's rule for host block devices, checked at define, edit and start (it looks at the host,
// so parse_definition() does not): a disk whose path is a block device (/dev/vda, an LVM
// volume) and that is not read-only needs allow_host_device_write = true in its table. A typo
// or a path swapped for the host's own disk would otherwise hand the guest write access to
// host storage; files and read-only devices need nothing.
Expected<void> check_host_block_devices(VmDefinition const& definition);

// "never", "on-failure", "always".
std::string_view restart_policy_name(VmDefinition::RestartPolicy policy);
Expected<VmDefinition::RestartPolicy> parse_restart_policy(std::string_view text);

// Checks every field of a definition built in code (e.g. from a JSON request) the way
// parse_definition() checks a TOML one: name, ranges, device option strings, pins, limits.
Expected<void> validate_definition(VmDefinition const& definition);

// Parses and validates a TOML definition. Errors name the key (with its table) and the value.
Expected<VmDefinition> parse_definition(std::string_view toml_text);

// Writes a definition in the TOML layout above; parse_definition(to_toml(d)) == d for every
// valid d (sizes are written in bytes, default ids explicitly).
std::string to_toml(VmDefinition const& definition);

// The machine kvmm builds for a definition, in the config library's type.
VmConfig machine_config_of(VmDefinition const& definition);

// The machine as the --config-file document kvmmd writes into the VM's state directory
// (config/microvm_config.h, ConfigDialect::Kvmm): the whole machine, so kvmm parses no device
// strings and every value keeps its type from the definition to kvmm.
std::string kvmm_machine_file(VmDefinition const& definition);

// The argv (argv[0] = kvmm_binary) for one kvmm process running the machine file written by
// kvmm_machine_file(), with a control socket (--control-sock PATH) and the serial console on a
// Unix socket (--console socket=PATH).
std::vector<std::string> kvmm_arguments(VmDefinition const& definition, std::string const& kvmm_binary,
                                        std::string const& machine_file, std::string const& api_socket,
                                        std::string const& console_socket);

} // namespace kvmm

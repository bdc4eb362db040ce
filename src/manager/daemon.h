// Daemon: the core of kvmmd. It keeps the VM definitions (StateStore), runs one kvmm process
// per running VM (supervisor.h) in its own cgroup, talks to each over its control socket
// (KvmmClient), pumps each console into a RotatingLog and a Scrollback, and answers the
// protocol's requests (protocol.h) with handle().
//
// VM states, as virsh shows them: "shut off" (defined, not running), "running", "paused",
// "crashed" (the last run ended badly; info gives the reason and exit status), "saved" (save
// took a Full snapshot of the VM and stopped its kvmm; start or restore brings it back from
// the snapshot, as virsh's managed save does).
//
// Snapshots (kvmm's PUT /snapshot/create through the control socket): save VM FILE pauses the
// VM, writes FILE and FILE.mem, records them in STATE_DIR/saved/NAME.json and stops kvmm; a
// failure before the files are complete resumes the VM as it was. snapshot VM SNAPSHOT keeps the
// VM running: pause, write STATE_DIR/snapshots/NAME/SNAPSHOT.{snap,mem}, resume (also when the
// write failed). kvmmd owns the files under its state directory: undefine removes them.
//
// Supervision: a monitor thread waits on every kvmm's pidfd and console socket. On exit it
// reaps the child (or, for a re-attached process that is not our child, reads the exit reason
// kvmm logged), removes the cgroup and the runtime record, and applies the restart policy:
// on-failure restarts a crashed VM, always restarts after any exit that the administrator did
// not ask for; at most `max_restarts` in `restart_window`, after that the VM stays crashed.
// A VM stopped with shutdown/destroy is "shut off" and never restarted.
//
// One daemon per state directory: create() first takes an exclusive flock on
// STATE_DIR/kvmmd.lock and fails, having touched nothing, while another daemon holds it, so a
// second kvmmd started by mistake cannot run the recovery below against VMs the live one is
// starting. The kernel drops the lock when the holder dies, so a crashed daemon never blocks the
// next one.
//
// Crash safety: a start is a journaled transaction (intent.json before kvmm is started,
// runtime.json after, then the intent is removed; state_store.h). Restart of the daemon:
// create() looks at every VM's cgroup, the only place where its processes can be: the process
// that the runtime record names (pid and start time) is re-attached (pidfd, control and console
// sockets, cgroup); every other process there is stopped with SIGKILL; a VM left without a
// process is recorded as crashed or shut off and its runtime state and cgroup are removed.
// So there is never an untracked kvmm, and never two for one VM; undefine refuses while the
// VM's cgroup holds a process. Autostart VMs start in start_autostart_vms().
//
// Threading: handle() from any number of threads. Verbs on one VM are serialised by that VM's
// operation lock (held across waits); every VM field is guarded by one daemon lock that is
// never held across a wait for another process. The destructor stops the monitor and helper
// threads and leaves every VM running, for the next daemon to re-attach.
#pragma once

#include "base/event_fd.h"
#include "base/expected.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "manager/cgroup.h"
#include "manager/state_store.h"
#include "manager/vm_jail.h"
#include "manager/volume_store.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace kvmm {

struct DaemonOptions {
    std::filesystem::path state_dir { "/var/lib/kvmm" };
    std::string kvmm_binary;              // absolute path of the kvmm program
    std::string cgroup_parent { "kvmm" }; // each VM's cgroup is PARENT/NAME
    size_t max_restarts { 5 };
    std::chrono::seconds restart_window { 60 };
    std::chrono::seconds start_timeout { 15 }; // until kvmm's control socket answers
    // Every VM runs through kvmm-jailer under its own uid (vm_jail.h); nullopt only when
    // kvmmd was started with --no-jail.
    std::optional<JailSettings> jail;
    // The group that may use kvmm's console sockets (as it may use kvmmd's control socket);
    // nullopt: root only.
    std::optional<gid_t> socket_group;
};

class Daemon {
public:
    static Expected<std::unique_ptr<Daemon>> create(DaemonOptions options);
    ~Daemon();
    Daemon(Daemon const&) = delete;
    Daemon& operator=(Daemon const&) = delete;

    // Answers one request object ({"verb": ...}) with a response object ({"ok": ...}).
    nlohmann::json handle(nlohmann::json const& request);

    // Starts every VM whose definition has autostart = true and that is not running.
    void start_autostart_vms();

    struct Vm;

private:
    explicit Daemon(DaemonOptions options, UniqueFd state_lock, StateStore store);

    Expected<nlohmann::json> dispatch(std::string const& verb, nlohmann::json const& request);
    Expected<std::shared_ptr<Vm>> find(std::string const& name);
    Expected<VmDefinition> checked_definition(std::string const& toml_text);

    Expected<nlohmann::json> define(nlohmann::json const& request);
    Expected<nlohmann::json> edit(nlohmann::json const& request);
    Expected<nlohmann::json> undefine(Vm& vm);
    Expected<nlohmann::json> set_autostart(Vm& vm, nlohmann::json const& request);
    Expected<void> start(Vm& vm);
    Expected<void> shutdown(Vm& vm, std::chrono::seconds timeout);
    Expected<void> destroy(Vm& vm);
    Expected<void> set_paused(Vm& vm, bool paused);
    // Snapshots (daemon_snapshot.cc).
    Expected<void> save(Vm& vm, nlohmann::json const& request);
    Expected<void> restore(Vm& vm);
    Expected<nlohmann::json> snapshot(Vm& vm, nlohmann::json const& request);
    nlohmann::json list(bool all);
    nlohmann::json info(Vm& vm);
    Expected<nlohmann::json> logs(Vm& vm, size_t lines);
    Expected<nlohmann::json> console(Vm& vm);
    std::string metrics();

    // Volumes and clone (daemon_volumes.cc).
    Expected<nlohmann::json> volume_create(nlohmann::json const& request);
    Expected<nlohmann::json> volume_list();
    Expected<nlohmann::json> volume_info(nlohmann::json const& request);
    Expected<nlohmann::json> volume_delete(nlohmann::json const& request);
    Expected<nlohmann::json> clone(nlohmann::json const& request);
    // Refuses to start `definition` while one of its writable disks is the backing file of a
    // volume or of another VM's disk (docs/kvmmctl.md, "Clones and backing files").
    Expected<void> check_writable_disks_are_not_backing(VmDefinition const& definition) EXCLUDES(m_lock);
    struct DiskUse;
    // Every defined VM's disks, for the reference checks; takes m_lock briefly.
    std::vector<DiskUse> disk_uses() EXCLUDES(m_lock);
    // The files some image stacks on: (identity, who stacks on it), over every volume and every
    // VM disk.
    std::vector<std::pair<FileIdentity, std::string>> backing_files(std::vector<DiskUse> const& uses)
        REQUIRES(m_volume_lock);

    // Process supervision (daemon_process.cc).
    void recover(Vm& vm);
    void reattach(Vm& vm, RuntimeRecord const& runtime, UniqueFd pidfd, std::optional<Cgroup> cgroup);
    Expected<void> stop_process(Vm& vm, std::chrono::milliseconds grace);
    bool wait_for_exit(Vm& vm, std::chrono::milliseconds timeout);
    void watch(Vm& vm, int fd, bool is_console) REQUIRES(m_lock);
    void monitor_main();
    void on_process_exit(std::shared_ptr<Vm> const& vm);
    void on_console_readable(std::shared_ptr<Vm> const& vm);
    // Console output into the VM's scrollback and log; with m_lock held.
    void record_console_output(Vm& vm, std::span<char const> data) REQUIRES(m_lock);
    // Stops watching and closes kvmmd's console connection; with m_lock held.
    void close_console(Vm& vm) REQUIRES(m_lock);
    void schedule_restart(std::string const& name) REQUIRES(m_lock);
    // Jailed VMs: the disks back to their owners and the jail directory removed, once no
    // process of the VM is left.
    void release_jail(std::string const& name);
    // A jailed VM's uid, as recorded at its first jailed start; none for an unjailed daemon or
    // a VM never started jailed.
    std::optional<uint32_t> jail_uid(std::string const& name) const;
    // Asks the VM's kvmm (control socket) for a snapshot at the host paths `snapshot_path` and
    // `memory_path`. A jailed kvmm writes it in its jail root, and kvmmd moves it out to them
    // (vm_jail.h, take_out_of_jail()).
    Expected<void> create_snapshot_files(std::string const& name, std::string const& control_socket,
                                         std::string const& snapshot_path, std::string const& memory_path);

    DaemonOptions m_options;
    // STATE_DIR/kvmmd.lock, flock()ed exclusively for the daemon's whole life (declared first,
    // so released last): one daemon per state directory.
    UniqueFd m_state_lock;
    StateStore m_store;

    // Serialises the volume verbs, clone and start's backing-file check, so that a check and the
    // change it guards cannot interleave with another. Taken before m_lock, never inside it.
    Mutex m_volume_lock ACQUIRED_BEFORE(m_lock);
    std::optional<VolumeStore> m_volumes GUARDED_BY(m_volume_lock); // STATE_DIR/volumes

    Mutex m_uid_lock;                  // serialises the choice of jailed VMs' uids (assign_vm_uid)
    Mutex m_lock;                      // guards the map, every Vm's fields (but not Vm::operation) and below
    std::condition_variable m_changed; // a VM's process exited or its state changed
    std::map<std::string, std::shared_ptr<Vm>> m_vms GUARDED_BY(m_lock);
    struct Watch {
        std::weak_ptr<Vm> vm;
        bool is_console { false };
    };
    std::map<uint64_t, Watch> m_watches GUARDED_BY(m_lock);
    uint64_t m_next_token GUARDED_BY(m_lock) { 1 };
    std::vector<std::thread> m_helpers GUARDED_BY(m_lock); // restarts; joined by the destructor
    bool m_stopping GUARDED_BY(m_lock) { false };

    UniqueFd m_epoll;              // the monitor's: pidfds and console sockets
    std::optional<EventFd> m_wake; // tells the monitor to stop
    std::thread m_monitor;
};

} // namespace kvmm

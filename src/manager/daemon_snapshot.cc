// Daemon: the snapshot verbs (save, restore, snapshot), through kvmm's PUT /snapshot/create on
// the VM's control socket. See daemon.h for what each leaves behind.
#include "manager/daemon.h"
#include "manager/daemon_vm.h"
#include "manager/kvmm_client.h"
#include "manager/protocol.h"
#include "manager/vm_jail.h"

#include <filesystem>

#include <spdlog/spdlog.h>

namespace kvmm {

namespace {

// Writing a guest's memory takes about a second per GiB on a slow disk; kvmmd's definitions
// hold at most 1 TiB, but a VM that takes longer than this is better failed (and resumed).
constexpr std::chrono::seconds SNAPSHOT_TIMEOUT { 120 };

} // namespace

Expected<void> Daemon::create_snapshot_files(std::string const& name, std::string const& control_socket,
                                             std::string const& snapshot_path, std::string const& memory_path) {
    KvmmClient client(control_socket, SNAPSHOT_TIMEOUT);
    auto const uid = jail_uid(name);
    auto const root = std::filesystem::path(control_socket).parent_path();
    // Jailed only when its control socket is in its jail root: a kvmm adopted from a daemon
    // that ran with --no-jail sees the host's paths.
    if (!uid || root != jail_root(*m_options.jail, jail_id(name, *uid)))
        return client.create_snapshot(snapshot_path, memory_path).with_context(fmt::format("VM '{}'", name));
    // A jailed kvmm sees only its jail root: it writes there, and kvmmd, which can reach both,
    // moves the files to where they were asked for.
    remove_from_jail(root, JAIL_SNAPSHOT_FILE);
    remove_from_jail(root, JAIL_MEMORY_FILE);
    TRY(client.create_snapshot(fmt::format("/{}", JAIL_SNAPSHOT_FILE), fmt::format("/{}", JAIL_MEMORY_FILE))
            .with_context(fmt::format("VM '{}'", name)));
    auto moved = take_out_of_jail(root, JAIL_MEMORY_FILE, *uid, memory_path);
    if (moved)
        moved = take_out_of_jail(root, JAIL_SNAPSHOT_FILE, *uid, snapshot_path);
    if (!moved) {
        remove_from_jail(root, JAIL_SNAPSHOT_FILE);
        remove_from_jail(root, JAIL_MEMORY_FILE);
        return moved.error().with_context(fmt::format("VM '{}'", name));
    }
    return {};
}

Expected<void> Daemon::save(Vm& vm, nlohmann::json const& request) {
    auto const file = TRY(required_string(request, "file"));
    // kvmm writes it, from its own working directory: kvmmctl sends an absolute path.
    if (file.empty() || file[0] != '/')
        return Error::format("save: the file '{}' must be an absolute path", file);
    SavedRecord const record { file, file + ".mem" };
    std::string control_socket;
    bool was_running = false;
    {
        MutexLock guard(m_lock);
        if (!vm.active())
            return Error::format("VM '{}' is {}: only a running or paused VM can be saved", vm.name, vm.state);
        control_socket = vm.control_socket;
        was_running = vm.state == STATE_RUNNING;
    }
    if (was_running)
        TRY(set_paused(vm, true));
    // Until the record is written the VM goes on as it was if anything fails: resumed if it ran.
    auto written = [&]() -> Expected<void> {
        TRY(create_snapshot_files(vm.name, control_socket, record.snapshot_path, record.memory_path));
        TRY(m_store.write_saved_record(vm.name, record));
        return {};
    }();
    if (!written) {
        if (was_running)
            (void)set_paused(vm, false);
        return written.error();
    }
    {
        MutexLock guard(m_lock);
        vm.saved = record;
    }
    // The exit is a requested one: on_process_exit leaves the VM "saved" (stopped_state()).
    TRY(stop_process(vm, std::chrono::seconds(5)));
    spdlog::info("VM '{}' saved to {} and {}", vm.name, record.snapshot_path, record.memory_path);
    return {};
}

Expected<void> Daemon::restore(Vm& vm) {
    {
        MutexLock guard(m_lock);
        if (!vm.saved)
            return Error::format("VM '{}' has no saved state ({}): save it first (kvmmctl save {} FILE)", vm.name,
                                 vm.state, vm.name);
    }
    return start(vm);
}

Expected<nlohmann::json> Daemon::snapshot(Vm& vm, nlohmann::json const& request) {
    auto const snapshot_name = TRY(required_string(request, "snapshot"));
    TRY(validate_vm_name(snapshot_name).with_context("snapshot name"));
    std::string control_socket;
    bool was_running = false;
    {
        MutexLock guard(m_lock);
        if (!vm.active())
            return Error::format("VM '{}' is {}: only a running or paused VM can be snapshotted", vm.name, vm.state);
        control_socket = vm.control_socket;
        was_running = vm.state == STATE_RUNNING;
    }
    auto const directory = TRY(m_store.snapshot_dir(vm.name));
    auto const snapshot_path = (directory / (snapshot_name + ".snap")).string();
    auto const memory_path = (directory / (snapshot_name + ".mem")).string();
    auto const paused_at = std::chrono::steady_clock::now();
    if (was_running)
        TRY(set_paused(vm, true));
    auto const created = create_snapshot_files(vm.name, control_socket, snapshot_path, memory_path);
    // The VM keeps running whatever happened to the snapshot.
    if (was_running)
        TRY(set_paused(vm, false));
    if (!created)
        return created.error();
    auto const paused_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - paused_at).count();
    spdlog::info("VM '{}': snapshot '{}' taken ({} ms paused)", vm.name, snapshot_name, paused_ms);
    MutexLock guard(m_lock);
    auto answer = info(vm);
    answer["snapshot"] = { { "name", snapshot_name },
                           { "snapshot_path", snapshot_path },
                           { "memory_path", memory_path },
                           { "paused_ms", paused_ms } };
    return answer;
}

} // namespace kvmm

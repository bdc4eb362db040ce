#include "vmm/machine.h"

#include "arch/x86_64/acpi/acpi_tables.h"
#include "arch/x86_64/cpu_state.h"
#include "arch/x86_64/cpuid.h"
#include "arch/x86_64/layout.h"
#include "base/event_loop.h"
#include "base/file.h"
#include "base/state_io.h"
#include "devices/fw_cfg/fw_cfg.h"
#include "devices/legacy/boot_marker.h"
#include "devices/legacy/buffered_sink.h"
#include "devices/legacy/byte_sink.h"
#include "devices/legacy/cmos_rtc.h"
#include "devices/legacy/debug_console.h"
#include "devices/legacy/i8042.h"
#include "devices/legacy/power_control.h"
#include "devices/legacy/pvpanic.h"
#include "devices/legacy/serial_16550.h"
#include "devices/virtio/balloon/balloon_device.h"
#include "devices/virtio/block/block_device.h"
#include "devices/virtio/console/console_device.h"
#include "vmm/console_input.h"
#include "vmm/console_server.h"
#include "vmm/firmware_boot_loader.h"
#include "vmm/firmware_config.h"
#include "vmm/gsi_interrupt_line.h"
#include "vmm/host_capacity.h"
#include "vmm/snapshot_file.h"
#include "vmm/virtio_device_factory.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <pthread.h>
#include <sys/signalfd.h>
#include <unistd.h>

namespace kvmm {

namespace {

// ISA interrupt lines of the PC devices (IOAPIC pins = GSIs, identity-mapped except IRQ0).
constexpr uint32_t COM1_GSI = 4;
constexpr uint32_t KEYBOARD_GSI = 1;

constexpr uint16_t COM1_PORT = 0x3f8;
constexpr uint16_t I8042_PORT = 0x60;
constexpr uint16_t RTC_PORT = 0x70;

} // namespace

sigset_t Machine::stop_signals() {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    return signals;
}

Machine::Machine(VmConfig config, GuestMemory memory, std::unique_ptr<Vm> vm, std::unique_ptr<VmLifecycle> lifecycle,
                 std::unique_ptr<BootLoader> boot_loader)
    : m_config(std::move(config)), m_memory(std::move(memory)), m_vm(std::move(vm)), m_lifecycle(std::move(lifecycle)),
      m_boot_loader(std::move(boot_loader)) {}

Machine::~Machine() { stop_vcpus(); }

Expected<std::unique_ptr<Machine>> Machine::create(VmConfig const& config, Hypervisor& hypervisor, MachineHooks hooks) {
    TRY(validate(config, UINT32_MAX));
    auto regions = TRY(x86_64::ram_regions(config.memory_size));
    std::unique_ptr<BootLoader> boot_loader;
    std::unique_ptr<FirmwareKernel> firmware_kernel;
    if (config.firmware_path) {
        boot_loader = TRY(FirmwareBootLoader::create(*config.firmware_path));
        // A kernel with firmware is the firmware's to load (QEMU's -kernel): it goes to fw_cfg.
        if (!config.kernel_path.empty()) {
            firmware_kernel = std::make_unique<FirmwareKernel>();
            firmware_kernel->kernel = TRY(read_file(config.kernel_path, config.memory_size).with_context("kernel"));
            if (config.initrd_path)
                firmware_kernel->initrd =
                    TRY(read_file(*config.initrd_path, config.memory_size).with_context("initrd"));
            firmware_kernel->cmdline = effective_cmdline(config);
        }
    } else {
        // Neither boot file can be useful if it is larger than guest RAM.
        boot_loader = TRY(LinuxBootLoader::create(config.kernel_path, config.initrd_path, effective_cmdline(config),
                                                  config.memory_size));
    }
    auto vm = TRY(hypervisor.create_vm());
    TRY(validate(config, vm->max_vcpus())); // now against the hypervisor's real vCPU limit
    for (auto const& warning : host_capacity_warnings(config, read_host_capacity()))
        spdlog::warn("{}", warning);
    auto huge_pages =
        config.transparent_huge_pages ? MemoryMapping::HugePages::Transparent : MemoryMapping::HugePages::No;
    auto memory = TRY(GuestMemory::create(regions, huge_pages));
    auto lifecycle = TRY(VmLifecycle::create());

    std::unique_ptr<Machine> machine(
        new Machine(config, std::move(memory), std::move(vm), std::move(lifecycle), std::move(boot_loader)));
    machine->m_hooks = hooks;
    machine->m_firmware_kernel = std::move(firmware_kernel);
    TRY(machine->acquire());
    if (hooks.enter_sandbox)
        TRY(hooks.enter_sandbox().with_context("entering the sandbox"));
    TRY(machine->attach_devices());
    TRY(machine->boot());
    TRY(machine->finish_memory_registration());
    return machine;
}

Expected<std::unique_ptr<Machine>> Machine::create_restored(VmConfig const& config, Hypervisor& hypervisor,
                                                            RestoreSource source, MachineHooks hooks) {
    TRY(validate(config, UINT32_MAX));
    // The firmware ROM and fw_cfg contents are not part of the saved state yet.
    if (config.firmware_path)
        return Error::format("restoring a machine booted from firmware ('{}') is not supported", *config.firmware_path);
    auto const regions = TRY(x86_64::ram_regions(config.memory_size));
    bool same_layout = regions.size() == source.memory_layout.size();
    for (size_t i = 0; same_layout && i < regions.size(); ++i)
        same_layout =
            regions[i].start == source.memory_layout[i].start && regions[i].size == source.memory_layout[i].size;
    if (!same_layout)
        return Error::format("the snapshot's memory layout ({} regions) is not the one of its configuration's {} MiB",
                             source.memory_layout.size(), config.memory_size >> 20);
    auto vm = TRY(hypervisor.create_vm());
    TRY(validate(config, vm->max_vcpus()));
    for (auto const& warning : host_capacity_warnings(config, read_host_capacity()))
        spdlog::warn("{}", warning);
    // Acquire: the memory file is a host resource like the disks; the mapping keeps it open.
    auto memory_file = TRY(open_read_only(source.memory_file_path).with_context("memory file"));
    auto memory =
        TRY(GuestMemory::create_from_file(regions, memory_file.get(), fmt::format("'{}'", source.memory_file_path)));
    memory_file.reset();
    auto lifecycle = TRY(VmLifecycle::create());

    std::unique_ptr<Machine> machine(
        new Machine(config, std::move(memory), std::move(vm), std::move(lifecycle), nullptr));
    machine->m_hooks = hooks;
    TRY(machine->acquire());
    if (hooks.enter_sandbox)
        TRY(hooks.enter_sandbox().with_context("entering the sandbox"));
    TRY(machine->attach_devices());
    TRY(machine->finish_memory_registration()); // the restored clocks and MSRs reach guest memory
    TRY(machine->restore(source.machine_state));
    machine->m_paused = source.start_paused;
    return machine;
}

// Phase 1: every host resource the machine will use, so that the sandbox can close the door
// behind it. Nothing here is visible to the guest yet.
Expected<void> Machine::acquire() {
    m_event_loop.emplace(TRY(EventLoop::create()));
    m_control_loop.emplace(TRY(EventLoop::create()));
    m_work_event.emplace(TRY(EventFd::create()));
    TRY(m_vm->set_tss_address(x86_64::KVM_TSS_ADDRESS));
    TRY(m_vm->set_identity_map_address(x86_64::KVM_IDENTITY_MAP_ADDRESS));
    TRY(m_vm->create_irqchip_and_pit());
    if (m_config.track_dirty_pages) {
        // From here on: the boot loader's writes and a restored guest's pages count as
        // written since the machine was built, which the first Diff then holds. GuestMemory's
        // record starts here, on this thread, before anything writes guest memory; KVM's
        // (what vCPUs write) starts on the registration thread, before any vCPU runs.
        m_memory.enable_dirty_tracking();
    }
    // Every memory slot is registered on one thread, in this order (KVM numbers the slots as
    // they come): RAM, its dirty logging, then the boot loader's read-only mappings.
    m_memory_registration = std::async(std::launch::async, [this]() -> Expected<void> {
        TRY(m_vm->map_memory(m_memory));
        if (m_config.track_dirty_pages)
            TRY(m_vm->enable_dirty_logging());
        if (m_boot_loader)
            TRY(m_boot_loader->map(*m_vm));
        return {};
    });
    for (uint32_t index = 0; index < m_config.vcpu_count; ++index)
        m_unconfigured_vcpus.push_back(TRY(m_vm->create_vcpu(index)));
    m_devices = TRY(DeviceManager::create(*m_vm, m_memory, *m_event_loop));
    std::shared_ptr<ByteSink> virtio_console_output;
    TRY(acquire_console(m_serial_output, virtio_console_output));
    TRY(acquire_virtio_devices(m_config, *m_devices, *m_event_loop, std::move(virtio_console_output)));
    return {};
}

Expected<void> Machine::finish_memory_registration() {
    if (!m_memory_registration.valid())
        return Error("the guest memory's registration was never started");
    return m_memory_registration.get();
}

// The console's host side. It goes to one device: the 16550, or hvc0 when a virtio console is
// configured (the other gets a sink that discards).
Expected<void> Machine::acquire_console(std::unique_ptr<ByteSink>& serial_output,
                                        std::shared_ptr<ByteSink>& virtio_console_output) {
    std::unique_ptr<ByteSink> console_output;
    switch (m_config.console.kind) {
    // A console device never writes the host fd itself: it appends to a bounded buffer that the
    // event loop drains without blocking (a full buffer drops output), so a stdout or file that
    // nobody reads cannot stop a vCPU. stdout's file description is shared with our parent.
    case ConsoleConfig::Kind::Stdio:
        m_console_output =
            TRY(BufferedSink::create(*m_event_loop, STDOUT_FILENO, BufferedSink::Description::Inherited, "stdout"));
        console_output = m_console_output->make_writer();
        break;
    case ConsoleConfig::Kind::File: {
        m_console_output = TRY(BufferedSink::create_console_file(*m_event_loop, m_config.console.path,
                                                                 BufferedSink::DEFAULT_MAX_CONSOLE_FILE_SIZE));
        console_output = m_console_output->make_writer();
        break;
    }
    case ConsoleConfig::Kind::None:
        console_output = make_null_sink();
        break;
    case ConsoleConfig::Kind::Socket:
        // Input is connected in attach, once the receiving device exists.
        m_console_server = TRY(ConsoleServer::create(m_config.console.path, *m_event_loop, nullptr));
        console_output = m_console_server->make_sink();
        break;
    }
    if (m_config.virtio_console) {
        virtio_console_output = std::move(console_output);
        serial_output = make_null_sink();
    } else {
        serial_output = std::move(console_output);
    }
    return {};
}

// Phase 3: the devices become visible to the guest: fixed legacy devices first (they reserve
// their ISA lines), then the virtio devices at allocated windows and lines.
Expected<void> Machine::attach_devices() {
    TRY(attach_legacy_devices());
    TRY(m_devices->attach_virtio_devices());
    if (m_console_server)
        m_console_server->set_deliver(console_receiver());
    return {};
}

Expected<void> Machine::attach_legacy_devices() {
    auto& lifecycle = *m_lifecycle;
    auto& devices = *m_devices;
    m_serial =
        std::make_shared<Serial16550>(std::make_shared<GsiInterruptLine>(*m_vm, COM1_GSI), std::move(m_serial_output));
    TRY(devices.attach_port("com1", DeviceKind::Serial, m_serial, state_hooks_of(m_serial), PortRange { COM1_PORT, 8 },
                            COM1_GSI));

    m_i8042 = std::make_shared<I8042>(std::make_shared<GsiInterruptLine>(*m_vm, KEYBOARD_GSI), [&lifecycle] {
        lifecycle.request_stop(StopReason { StopReason::Cause::Reset, "i8042 reset line" });
    });
    TRY(devices.attach_port("i8042", DeviceKind::Keyboard, m_i8042, state_hooks_of(m_i8042),
                            PortRange { I8042_PORT, static_cast<uint16_t>(I8042_PORT_RANGE_LENGTH) }, KEYBOARD_GSI));
    auto rtc = std::make_shared<CmosRtc>();
    TRY(devices.attach_port("rtc", DeviceKind::Rtc, rtc, state_hooks_of(rtc), PortRange { RTC_PORT, 2 }));
    auto power = std::make_shared<PowerControl>([&lifecycle](PowerEvent event) {
        if (event == PowerEvent::PowerOff)
            lifecycle.request_stop(StopReason { StopReason::Cause::PowerOff, "ACPI sleep control (S5)" });
        else
            lifecycle.request_stop(StopReason { StopReason::Cause::Reset, "ACPI reset register" });
    });
    TRY(devices.attach_port("power", DeviceKind::PowerControl, power, state_hooks_of(power),
                            PortRange { POWER_CONTROL_PORT, 1 }));
    auto boot_marker = std::make_shared<BootMarker>();
    TRY(devices.attach_port("boot-marker", DeviceKind::BootMarker, boot_marker, state_hooks_of(boot_marker),
                            PortRange { BOOT_MARKER_PORT, 1 }));
    auto pvpanic = std::make_shared<Pvpanic>([&lifecycle](Pvpanic::Event event) {
        lifecycle.request_stop(StopReason { StopReason::Cause::GuestCrashed,
                                            event == Pvpanic::Event::Panicked
                                                ? "the guest kernel panicked (reported through pvpanic)"
                                                : "the guest loaded its crash kernel (reported through pvpanic)" });
    });
    TRY(devices.attach_mmio("pvpanic", DeviceKind::Pvpanic, pvpanic, state_hooks_of(pvpanic),
                            MmioWindow { PVPANIC_MMIO_ADDRESS, PVPANIC_MMIO_LENGTH }));
    if (m_config.firmware_path) {
        m_fw_cfg = std::make_shared<FwCfg>(m_memory);
        TRY(devices.attach_port("fw-cfg", DeviceKind::FwCfg, m_fw_cfg, state_hooks_of(m_fw_cfg),
                                PortRange { fw_cfg::PORT_BASE, fw_cfg::PORT_LENGTH }));
        // The firmware's own diagnostic log (SeaBIOS writes it when the port answers): kvmm's
        // log at debug level, so `--log-level debug` shows what the firmware did. Only then:
        // each byte is a port exit, and the firmware skips the log when nothing answers.
        if (spdlog::should_log(spdlog::level::debug)) {
            auto debug_console =
                std::make_shared<DebugConsole>([](std::string_view line) { spdlog::debug("firmware: {}", line); });
            TRY(devices.attach_port("debug-console", DeviceKind::DebugConsole, debug_console,
                                    state_hooks_of(debug_console), PortRange { DEBUG_CONSOLE_PORT, 1 }));
        }
    }
    return {};
}

std::function<size_t(std::span<uint8_t const>)> Machine::console_receiver() {
    auto serial = m_serial;
    auto* virtio_console = m_devices->console();
    return [serial, virtio_console](std::span<uint8_t const> bytes) {
        return virtio_console ? virtio_console->receive(bytes) : serial->receive(bytes);
    };
}

// Phase 4: the ACPI tables describe what attach placed; the boot loader writes the guest's
// start; every vCPU gets CPUID, MSRs, FPU and LAPIC wiring, the boot vCPU its entry state.
Expected<void> Machine::boot() {
    x86_64::AcpiConfig acpi;
    acpi.vcpu_count = m_config.vcpu_count;
    for (auto const& entry : m_devices->entries()) {
        if (entry.kind == DeviceKind::Pvpanic)
            acpi.pvpanic_address = std::get<MmioWindow>(entry.attachment).base;
    }
    for (auto const& resource : m_devices->virtio_mmio_resources())
        acpi.virtio_devices.push_back(x86_64::AcpiVirtioMmioDevice { resource.base, resource.size, resource.gsi });
    // Firmware installs the tables itself, from fw_cfg, where it chooses; a kernel booted
    // directly finds them in the legacy BIOS area.
    GuestAddress rsdp(0);
    if (m_fw_cfg)
        TRY(configure_firmware(acpi));
    else
        rsdp = TRY(x86_64::write_acpi_tables(m_memory, acpi));
    TRY(m_boot_loader->load(m_memory, rsdp));

    auto const supported_cpuid = TRY(m_vm->supported_cpuid());
    auto const msrs = x86_64::boot_msrs();
    for (auto& vcpu : m_unconfigured_vcpus) {
        auto const index = vcpu->index();
        auto const cpuid = x86_64::build_cpuid(supported_cpuid, index, m_config.vcpu_count, m_config.threads_per_core);
        TRY(vcpu->set_cpuid(cpuid));
        TRY(vcpu->set_msrs(msrs));
        TRY(vcpu->reset_fpu());
        auto lapic = TRY(vcpu->lapic());
        x86_64::configure_lapic_lint(lapic);
        TRY(vcpu->set_lapic(lapic));
        // Only the bootstrap processor gets boot registers; the others wait in the kernel's
        // wait-for-SIPI state until the guest starts them through its LAPIC (INIT, SIPI).
        if (index == 0) {
            auto const special_registers = TRY(vcpu->special_registers());
            auto const state = TRY(m_boot_loader->boot_cpu_state(special_registers));
            TRY(vcpu->set_special_registers(state.special_registers));
            TRY(vcpu->set_registers(state.registers));
        }
    }
    wrap_vcpus();
    return {};
}

Expected<void> Machine::configure_firmware(x86_64::AcpiConfig const& acpi) {
    FirmwareConfig firmware;
    firmware.vcpu_count = m_config.vcpu_count;
    firmware.ram_size = m_memory.total_size();
    firmware.memory_map = x86_64::firmware_memory_map(m_memory);
    firmware.acpi = TRY(x86_64::build_acpi_blobs(acpi));
    // Disks in configured order, the root device first: the firmware tries them in this order.
    std::vector<std::string> later;
    for (auto const& disk : m_config.disks) {
        for (auto const& entry : m_devices->entries()) {
            if (entry.kind != DeviceKind::Block || entry.id != disk.id)
                continue;
            auto path = virtio_mmio_boot_path(std::get<MmioWindow>(entry.attachment).base);
            (disk.is_root_device ? firmware.boot_order : later).push_back(std::move(path));
        }
    }
    firmware.boot_order.insert(firmware.boot_order.end(), later.begin(), later.end());
    if (m_firmware_kernel) {
        firmware.kernel = std::move(*m_firmware_kernel);
        m_firmware_kernel.reset();
    }
    return populate_fw_cfg(*m_fw_cfg, std::move(firmware));
}

// The vCPUs, configured, go to their threads (not started before run()).
void Machine::wrap_vcpus() {
    for (auto& vcpu : m_unconfigured_vcpus)
        m_vcpus.push_back(std::make_unique<VcpuThread>(std::move(vcpu),
                                                       IoBuses { m_devices->pio_bus(), m_devices->mmio_bus() },
                                                       *m_lifecycle, m_hooks.enter_vcpu_thread));
    m_unconfigured_vcpus.clear();
}

// Phase 4 of a restored machine: the saved state in place of the boot state. Guest memory
// already holds the ACPI tables and whatever the guest loaded; restore_state sets each vCPU's
// CPUID, MSRs, LAPIC and registers from the state.
Expected<void> Machine::restore(std::span<std::byte const> machine_state) {
    wrap_vcpus();
    return restore_state(machine_state);
}

StopReason Machine::run() {
    // Block the stop signals in every thread (the vCPU threads inherit the mask) and take
    // them through a signalfd in the event loop instead.
    sigset_t const signals = stop_signals();
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    VcpuThread::install_kick_signal_handler();

    m_started = true;
    // A machine restored paused starts its vCPUs on the first resume().
    if (!m_paused) {
        for (auto& vcpu : m_vcpus)
            vcpu->start();
    }
    // The event loop's filter comes after the vCPU threads exist, so that they do not inherit
    // it (a machine restored paused starts them later: the loop's filter allows their calls).
    Expected<void> served {};
    if (m_hooks.enter_event_loop)
        served = m_hooks.enter_event_loop().with_context("entering the event loop's sandbox");
    if (served)
        served = serve_events();
    fail_posted_work();
    if (!served)
        m_lifecycle->request_stop(StopReason { StopReason::Cause::VmmFailure, served.error().message() });
    stop_vcpus();
    // What the guest wrote last is often why it stopped; the host gets it within a bounded time.
    if (m_console_output)
        m_console_output->flush();
    return *m_lifecycle->reason();
}

Expected<void> Machine::serve_events() {
    auto& loop = *m_event_loop;
    sigset_t const signals = stop_signals();
    UniqueFd signal_fd(::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd.is_valid())
        return Error::from_errno("signalfd");
    auto on_signal = [&] {
        signalfd_siginfo info {};
        if (::read(signal_fd.get(), &info, sizeof(info)) == sizeof(info)) {
            auto const signal_number = static_cast<int>(info.ssi_signo);
            m_lifecycle->request_stop(
                StopReason { StopReason::Cause::HostSignal, strsignal(signal_number), signal_number });
        }
    };
    // The registrations live only as long as this call (declared after signal_fd, so they go
    // first): the loops, members, never keep callbacks into this frame. Signals, stop requests
    // and posted work are served by both loops, so they work while paused.
    std::vector<EventLoop::Registration> registrations;
    for (auto* current : { &loop, &*m_control_loop }) {
        registrations.push_back(TRY(current->watch(signal_fd.get(), on_signal)));
        registrations.push_back(TRY(current->watch(m_lifecycle->event_fd(), [] {})));
        registrations.push_back(TRY(current->watch(m_work_event->fd(), [this] { run_posted_work(); })));
    }

    std::optional<ConsoleInput> input;
    EventLoop::Registration input_registration;
    if (m_config.console.kind == ConsoleConfig::Kind::Stdio) {
        input.emplace(TRY(ConsoleInput::create(STDIN_FILENO, console_receiver())));
        auto watched = loop.watch(STDIN_FILENO, [&] {
            if (!input->on_readable())
                input_registration.reset(); // end of input: the guest keeps running
        });
        if (watched)
            input_registration = std::move(*watched);
        else // stdin closed or not pollable (e.g. /dev/null is fine, a closed fd is not)
            spdlog::debug("console input disabled: {}", watched.error().message());
    }

    while (!m_lifecycle->stop_requested()) {
        // While input waits for room in the UART's buffer, retry on a short timer.
        bool const console_pending = m_console_server && m_console_server->has_pending_input();
        auto const timeout = (input && input->has_pending()) || console_pending ? std::chrono::milliseconds(5)
                                                                                : std::chrono::milliseconds(-1);
        // Paused: devices wait (their fds stay unread in the main loop) until resume.
        TRY((m_paused ? *m_control_loop : loop).run_once(timeout));
        if (input && input->has_pending())
            input->flush_pending();
        if (m_console_server && m_console_server->has_pending_input())
            m_console_server->flush_pending_input();
    }
    return {};
}

Expected<void> Machine::call_on_loop(std::function<Expected<void>()> work) {
    std::future<Expected<void>> result;
    {
        MutexLock guard(m_work_lock);
        if (m_loop_finished)
            return Error("the VM has stopped");
        PostedWork posted { std::move(work), {} };
        result = posted.done.get_future();
        m_posted_work.push_back(std::move(posted));
    }
    TRY(m_work_event->signal());
    return result.get();
}

void Machine::run_posted_work() {
    (void)m_work_event->consume();
    while (true) {
        std::optional<PostedWork> posted;
        {
            MutexLock guard(m_work_lock);
            if (m_posted_work.empty())
                return;
            posted.emplace(std::move(m_posted_work.front()));
            m_posted_work.pop_front();
        }
        posted->done.set_value(posted->work());
    }
}

// Called when the loop ends: whoever still waits gets an answer, and nothing new is queued.
void Machine::fail_posted_work() {
    MutexLock guard(m_work_lock);
    m_loop_finished = true;
    for (auto& posted : m_posted_work)
        posted.done.set_value(Error("the VM stopped before the request ran"));
    m_posted_work.clear();
}

Expected<void> Machine::pause() {
    return call_on_loop([this]() -> Expected<void> {
        if (m_paused)
            return {};
        for (auto& vcpu : m_vcpus)
            vcpu->pause();
        if (m_console_output)
            m_console_output->write_pending();
        m_paused = true;
        spdlog::info("VM paused");
        return {};
    });
}

Expected<void> Machine::resume() {
    return call_on_loop([this]() -> Expected<void> {
        if (!m_paused)
            return {};
        m_paused = false;
        for (auto& vcpu : m_vcpus) {
            vcpu->start(); // only a vCPU that never ran (restored paused) starts here
            vcpu->resume();
        }
        spdlog::info("VM resumed");
        return {};
    });
}

Expected<void> Machine::send_ctrl_alt_del() {
    return call_on_loop([this]() -> Expected<void> {
        m_i8042->send_ctrl_alt_del();
        return {};
    });
}

Expected<void> Machine::update_disk_rate_limit(std::string const& id, RateLimitConfig const& changes) {
    return call_on_loop([&] { return m_devices->update_disk_rate_limit(id, changes); });
}

Expected<void> Machine::replace_disk_image(std::string const& id, std::string const& path) {
    return call_on_loop([&]() -> Expected<void> {
        // Checked on the loop thread, where pause and resume happen, so it cannot change meanwhile.
        if (m_paused.load())
            return Error::format("drive '{}': path_on_host cannot change while the microVM is paused; resume it first",
                                 id);
        return m_devices->replace_disk_image(id, path);
    });
}

Expected<void> Machine::update_net_rate_limits(std::string const& id, std::optional<RateLimitConfig> const& rx_changes,
                                               std::optional<RateLimitConfig> const& tx_changes) {
    return call_on_loop([&] { return m_devices->update_net_rate_limits(id, rx_changes, tx_changes); });
}

Expected<virtio::BalloonDevice*> Machine::balloon() const {
    auto* balloon = m_devices->balloon();
    if (!balloon)
        return Error("this microVM has no balloon device (PUT /balloon before InstanceStart)");
    return balloon;
}

Expected<void> Machine::set_balloon_target(uint64_t target_mib) {
    return call_on_loop([&]() -> Expected<void> { return TRY(balloon())->set_target_mib(target_mib); });
}

Expected<void> Machine::set_balloon_statistics_interval(std::chrono::seconds interval) {
    return call_on_loop([&]() -> Expected<void> { return TRY(balloon())->set_stats_interval(interval); });
}

Expected<BalloonReport> Machine::balloon_report() {
    BalloonReport report;
    auto gathered = call_on_loop([&]() -> Expected<void> {
        auto* device = TRY(balloon());
        report.target_mib = device->target_mib();
        report.actual_mib = device->actual_mib();
        report.actual_pages = device->actual_pages();
        report.statistics = device->statistics();
        return {};
    });
    if (!gathered)
        return gathered.error();
    return report;
}

Expected<Machine::Metrics> Machine::metrics() {
    Metrics metrics;
    TRY(call_on_loop([&]() -> Expected<void> {
        for (auto const& vcpu : m_vcpus)
            metrics.vcpus.push_back(vcpu->exit_counts());
        metrics.devices = m_devices->metrics();
        add_console_output_metrics(metrics.devices);
        return {};
    }));
    return metrics;
}

// The console's host side, under the device that is the console: "serial" (the 16550) or the
// virtio console's own entry.
void Machine::add_console_output_metrics(std::vector<DeviceMetrics>& devices) const {
    if (!m_console_output && !m_console_server)
        return;
    std::string const name = m_config.virtio_console ? "console" : "serial";
    auto entry = std::find_if(devices.begin(), devices.end(), [&](auto const& device) { return device.name == name; });
    if (entry == devices.end())
        entry = devices.insert(devices.end(), DeviceMetrics { name, {} });
    if (m_console_output) {
        auto const counters = m_console_output->counters();
        entry->counters.emplace_back("bytes_written", counters.bytes_written);
        entry->counters.emplace_back("bytes_dropped", counters.bytes_dropped);
    } else {
        entry->counters.emplace_back("bytes_dropped", m_console_server->dropped_bytes()); // summed over clients
    }
}

namespace {

constexpr std::string_view MACHINE_SECTION = "machine";
constexpr uint32_t MACHINE_VERSION = 1;

} // namespace

// The payload, in the order KVM needs it saved (docs/ARCHITECTURE.md "Saved state"): the
// machine's shape, every vCPU (each finishes its last instruction first), the VM-wide
// interrupt controllers and clock (after the vCPUs: the last instruction may have been an OUT
// to the PIC or PIT), the devices.
Expected<std::vector<std::byte>> Machine::save_state() {
    StateWriter writer;
    auto saved = call_on_loop([&]() -> Expected<void> {
        if (!m_paused)
            return Error("the microVM must be paused to save its state");
        // Disk requests still on the host are answered first (they write guest memory and
        // raise interrupts), and their data made durable: the state then describes a disk
        // with nothing in flight, which is what a restored device can go on from.
        for (auto const& disk : m_config.disks) {
            auto* device = TRY(m_devices->disk(disk.id));
            TRY(device->complete_and_flush().with_context(fmt::format("drive '{}'", disk.id)));
        }
        writer.begin_section(MACHINE_SECTION, MACHINE_VERSION);
        writer.u32(m_config.vcpu_count);
        writer.u64(m_config.memory_size);
        writer.end_section();
        for (auto& vcpu : m_vcpus)
            (TRY(vcpu->save_state())).encode(writer);
        (TRY(m_vm->save_state())).encode(writer);
        return m_devices->save_state(writer);
    });
    if (!saved)
        return saved.error();
    return seal_state(writer.payload());
}

// Restored in the order KVM needs: the VM's interrupt controllers before the vCPUs (restoring
// the IOAPIC and PIC delivers what is pending in them to the LAPICs, which the vCPUs' saved
// LAPICs then replace), the devices last. Every section is decoded and checked against this
// machine before anything is written.
Expected<void> Machine::restore_state(std::span<std::byte const> blob) {
    if (m_started)
        return Error("a saved state is restored only into a machine that has not run");
    auto const payload = TRY(open_state(blob));
    StateReader reader(payload);
    TRY(reader.begin_section(MACHINE_SECTION, MACHINE_VERSION));
    auto const vcpu_count = TRY(reader.u32("vcpu_count"));
    auto const memory_size = TRY(reader.u64("memory_size"));
    TRY(reader.end_section());
    if (vcpu_count != m_config.vcpu_count)
        return Error::format("machine state: vcpu_count {} is not this machine's {}", vcpu_count, m_config.vcpu_count);
    if (memory_size != m_config.memory_size)
        return Error::format("machine state: memory_size {} is not this machine's {}", memory_size,
                             m_config.memory_size);
    std::vector<X86VcpuState> vcpus;
    for (uint32_t index = 0; index < vcpu_count; ++index) {
        auto state = TRY(X86VcpuState::decode(reader).with_context(fmt::format("vCPU {}", index)));
        TRY(state.check().with_context(fmt::format("vCPU {}", index)));
        vcpus.push_back(std::move(state));
    }
    auto const vm = TRY(X86VmState::decode(reader));
    TRY(m_vm->restore_state(vm));
    for (size_t index = 0; index < vcpus.size(); ++index)
        TRY(m_vcpus[index]->restore_state(vcpus[index]).with_context(fmt::format("vCPU {}", index)));
    TRY(m_devices->restore_state(reader));
    if (!reader.at_end())
        return Error("machine state: data after the last section");
    return {};
}

std::vector<GuestRegionSpec> Machine::memory_layout() const {
    std::vector<GuestRegionSpec> layout;
    for (auto const& region : m_memory.regions())
        layout.push_back(GuestRegionSpec { region.start, region.size });
    return layout;
}

Expected<std::vector<std::vector<uint64_t>>> Machine::take_dirty_pages() {
    std::vector<std::vector<uint64_t>> pages;
    for (size_t index = 0; index < m_memory.regions().size(); ++index) {
        auto logged = m_vm->take_dirty_log(index);
        auto host = m_memory.take_dirty_pages(index);
        if (!logged) {
            pages.push_back(std::move(host));
            return_dirty_pages(pages);
            return logged.error().with_context("taking the dirty page log");
        }
        auto bitmap = std::move(*logged);
        for (size_t word = 0; word < bitmap.size() && word < host.size(); ++word)
            bitmap[word] |= host[word];
        pages.push_back(std::move(bitmap));
    }
    return pages;
}

void Machine::return_dirty_pages(std::vector<std::vector<uint64_t>> const& pages) {
    for (size_t index = 0; index < pages.size(); ++index)
        m_memory.mark_dirty_pages(index, pages[index]);
}

Expected<SnapshotReport> Machine::write_snapshot(std::string const& snapshot_path, std::string const& memory_path,
                                                 std::string const& config_json, SnapshotType type) {
    if (type == SnapshotType::Diff && !m_config.track_dirty_pages)
        return Error("a Diff snapshot needs dirty page tracking (machine-config track_dirty_pages, or "
                     "track_dirty_pages in snapshot/load)");
    auto const started = std::chrono::steady_clock::now();
    SnapshotFile file;
    file.config_json = config_json;
    file.type = type;
    file.memory_layout = memory_layout();
    file.machine_state = TRY(save_state());
    // Guest memory is read on this thread: the vCPUs are paused and the event loop serves no
    // device while paused, so nothing writes it meanwhile; save_state() completed the disks'
    // requests, so the pages they wrote are in the record taken here.
    if (!m_paused)
        return Error("the microVM must be paused to save its state");
    std::optional<std::vector<std::vector<uint64_t>>> dirty;
    if (m_config.track_dirty_pages)
        dirty = TRY(take_dirty_pages());
    auto const state_saved = std::chrono::steady_clock::now();
    auto report =
        write_snapshot_files(snapshot_path, memory_path, file, type == SnapshotType::Diff ? &*dirty : nullptr);
    if (!report) {
        if (dirty)
            return_dirty_pages(*dirty);
        return report.error();
    }
    report->state_time += std::chrono::duration_cast<std::chrono::microseconds>(state_saved - started);
    return report;
}

// Both files are written in full under temporary names, and only then renamed (memory file
// first), so a failure while writing either leaves neither a new memory file beside an old
// snapshot file nor the reverse.
Expected<SnapshotReport> Machine::write_snapshot_files(std::string const& snapshot_path, std::string const& memory_path,
                                                       SnapshotFile const& file,
                                                       std::vector<std::vector<uint64_t>> const* dirty_pages) {
    SnapshotReport report;
    report.type = file.type;
    auto const started = std::chrono::steady_clock::now();
    auto memory_file = TRY(PendingFile::create(memory_path).with_context(fmt::format("writing '{}'", memory_path)));
    auto const stats = TRY((dirty_pages ? m_memory.write_pages_to_file(memory_file.fd(), *dirty_pages)
                                        : m_memory.write_to_file(memory_file.fd()))
                               .with_context(fmt::format("writing '{}'", memory_path)));
    report.memory_bytes_written = stats.bytes_written;
    // Synced now, so that the memory's cost is counted as such (commit's fsync is then cheap).
    if (::fdatasync(memory_file.fd()) != 0)
        return Error::from_errno(fmt::format("syncing the memory file for '{}'", memory_path));
    report.memory_bytes = m_memory.total_size();
    auto const memory_written = std::chrono::steady_clock::now();
    auto const encoded = file.encode();
    auto snapshot_file =
        TRY(PendingFile::create(snapshot_path).with_context(fmt::format("writing '{}'", snapshot_path)));
    size_t done = 0;
    while (done < encoded.size()) {
        ssize_t const written = ::write(snapshot_file.fd(), encoded.data() + done, encoded.size() - done);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return Error::from_errno(fmt::format("writing '{}'", snapshot_path));
        done += static_cast<size_t>(written);
    }
    TRY(memory_file.commit());
    TRY(snapshot_file.commit());
    report.state_bytes = encoded.size();
    report.memory_time = std::chrono::duration_cast<std::chrono::microseconds>(memory_written - started);
    report.state_time =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - memory_written);
    return report;
}

void Machine::request_stop(StopReason reason) { m_lifecycle->request_stop(std::move(reason)); }

void Machine::stop_vcpus() {
    for (auto& vcpu : m_vcpus)
        vcpu->request_stop();
    for (auto& vcpu : m_vcpus)
        vcpu->join();
}

} // namespace kvmm

#include "vmm/vcpu_thread.h"

#include <spdlog/spdlog.h>

#include <csignal>
#include <pthread.h>

namespace kvmm {

namespace {

// A real-time signal that nothing else in kvmm uses; its handler does nothing: its only job is
// to make a blocking KVM_RUN return EINTR.
int kick_signal() { return SIGRTMIN; }

void log_register_dump(Vcpu const& vcpu) {
    auto registers = vcpu.registers();
    auto special = vcpu.special_registers();
    if (!registers || !special) {
        spdlog::error("vCPU {}: registers unavailable for the dump", vcpu.index());
        return;
    }
    auto const& r = *registers;
    auto const& s = *special;
    spdlog::error("vCPU {} registers:\n"
                  "  rip={:016x} rflags={:016x} rsp={:016x} rbp={:016x}\n"
                  "  rax={:016x} rbx={:016x} rcx={:016x} rdx={:016x}\n"
                  "  rsi={:016x} rdi={:016x} r8 ={:016x} r9 ={:016x}\n"
                  "  r10={:016x} r11={:016x} r12={:016x} r13={:016x} r14={:016x} r15={:016x}\n"
                  "  cs={:04x} (base {:x} l={} db={}) ss={:04x} ds={:04x} tr={:04x}\n"
                  "  cr0={:x} cr2={:x} cr3={:x} cr4={:x} efer={:x}\n"
                  "  gdt={:x}/{:x} idt={:x}/{:x}",
                  vcpu.index(), r.rip, r.rflags, r.rsp, r.rbp, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.r8, r.r9,
                  r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, s.cs.selector, s.cs.base, s.cs.l, s.cs.db, s.ss.selector,
                  s.ds.selector, s.tr.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.gdt.base, s.gdt.limit, s.idt.base,
                  s.idt.limit);
}

} // namespace

char const* to_string(VcpuState state) {
    switch (state) {
    case VcpuState::Created:
        return "created";
    case VcpuState::Running:
        return "running";
    case VcpuState::Paused:
        return "paused";
    case VcpuState::Stopped:
        return "stopped";
    }
    return "unknown";
}

VcpuThread::VcpuThread(std::unique_ptr<Vcpu> vcpu, IoBuses buses, VmLifecycle& lifecycle, ThreadEntry on_thread_start)
    : m_vcpu(std::move(vcpu)), m_index(m_vcpu->index()), m_buses(buses), m_lifecycle(lifecycle),
      m_on_thread_start(std::move(on_thread_start)) {}

VcpuThread::~VcpuThread() {
    request_stop();
    join();
}

void VcpuThread::install_kick_signal_handler() {
    struct sigaction action {};
    action.sa_handler = [](int) {};
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(kick_signal(), &action, nullptr);
}

void VcpuThread::start() {
    MutexLock guard(m_lock);
    if (m_state != VcpuState::Created)
        return;
    m_state = VcpuState::Running;
    m_thread = std::thread([this] { thread_main(); });
}

void VcpuThread::kick() {
    m_vcpu->set_immediate_exit(true);
    if (m_thread.joinable())
        pthread_kill(m_thread.native_handle(), kick_signal());
}

void VcpuThread::pause() {
    MutexLock guard(m_lock);
    if (m_state != VcpuState::Running)
        return;
    m_command = Command::Pause;
    kick();
    guard.wait(m_changed, [this]() REQUIRES(m_lock) { return m_state != VcpuState::Running; });
}

void VcpuThread::resume() {
    MutexLock guard(m_lock);
    if (m_command == Command::Pause)
        m_command = Command::Run;
    m_changed.notify_all();
}

void VcpuThread::request_stop() {
    MutexLock guard(m_lock);
    m_command = Command::Stop;
    if (m_state == VcpuState::Created)
        m_state = VcpuState::Stopped;
    else if (m_state != VcpuState::Stopped)
        kick();
    m_changed.notify_all();
}

void VcpuThread::join() {
    if (m_thread.joinable())
        m_thread.join();
}

Expected<X86VcpuState> VcpuThread::save_state() {
    MutexLock guard(m_lock);
    if (m_state != VcpuState::Paused && m_state != VcpuState::Created)
        return Error::format("vCPU {} is {}: its state is saved only while it is paused", m_index, to_string(m_state));
    return m_vcpu->save_state();
}

Expected<void> VcpuThread::restore_state(X86VcpuState const& state) {
    MutexLock guard(m_lock);
    if (m_state != VcpuState::Paused && m_state != VcpuState::Created)
        return Error::format("vCPU {} is {}: its state is restored only while it is paused", m_index,
                             to_string(m_state));
    return m_vcpu->restore_state(state);
}

VcpuState VcpuThread::state() const {
    MutexLock guard(m_lock);
    return m_state;
}

bool VcpuThread::obey_command() {
    MutexLock guard(m_lock);
    if (m_command == Command::Pause) {
        m_state = VcpuState::Paused;
        m_changed.notify_all();
        guard.wait(m_changed, [this]() REQUIRES(m_lock) { return m_command != Command::Pause; });
    }
    if (m_command == Command::Stop)
        return false;
    m_state = VcpuState::Running;
    m_changed.notify_all();
    return true;
}

void VcpuThread::report_death(std::string const& detail) {
    spdlog::error("vCPU {}: {}", m_index, detail);
    log_register_dump(*m_vcpu);
    m_lifecycle.request_stop(StopReason { StopReason::Cause::GuestCrashed, detail });
}

void VcpuThread::thread_main() {
    char name[16];
    std::snprintf(name, sizeof(name), "vcpu%u", m_index);
    pthread_setname_np(pthread_self(), name);
    if (m_on_thread_start) {
        if (auto entered = m_on_thread_start(m_index); !entered) {
            spdlog::error("vCPU {}: {}", m_index, entered.error().message());
            m_lifecycle.request_stop(StopReason { StopReason::Cause::VmmFailure, entered.error().message() });
            MutexLock guard(m_lock);
            m_state = VcpuState::Stopped;
            m_changed.notify_all();
            return;
        }
    }

    // A stop or pause requested before the thread got going is honoured before the first entry.
    bool keep_running = obey_command();
    while (keep_running) {
        auto exit = m_vcpu->run();
        if (!exit) {
            spdlog::error("vCPU {}: {}", m_index, exit.error().message());
            m_lifecycle.request_stop(StopReason { StopReason::Cause::VmmFailure, exit.error().message() });
            break;
        }
        std::visit(
            [this](auto const& kind) {
                using Kind = std::decay_t<decltype(kind)>;
                if constexpr (std::is_same_v<Kind, vcpu_exit::IoIn> || std::is_same_v<Kind, vcpu_exit::IoOut>)
                    m_io_exits.fetch_add(1, std::memory_order_relaxed);
                else if constexpr (std::is_same_v<Kind, vcpu_exit::MmioRead> ||
                                   std::is_same_v<Kind, vcpu_exit::MmioWrite>)
                    m_mmio_exits.fetch_add(1, std::memory_order_relaxed);
                else if constexpr (std::is_same_v<Kind, vcpu_exit::Halt>)
                    m_halt_exits.fetch_add(1, std::memory_order_relaxed);
                else
                    m_other_exits.fetch_add(1, std::memory_order_relaxed);
            },
            *exit);
        auto const action = handle_exit(*exit, m_buses);
        switch (action.kind) {
        case ExitAction::Kind::Continue:
            continue;
        case ExitAction::Kind::CheckState:
            m_vcpu->set_immediate_exit(false); // clear before reading the command: see the header
            keep_running = obey_command();
            continue;
        case ExitAction::Kind::PowerOff:
            m_lifecycle.request_stop(StopReason { StopReason::Cause::PowerOff, "system event" });
            keep_running = false;
            continue;
        case ExitAction::Kind::Reset:
            m_lifecycle.request_stop(StopReason { StopReason::Cause::Reset, "system event" });
            keep_running = false;
            continue;
        case ExitAction::Kind::GuestCrashed:
            report_death(action.detail);
            keep_running = false;
            continue;
        }
    }
    MutexLock guard(m_lock);
    m_state = VcpuState::Stopped;
    m_changed.notify_all();
}

VcpuThread::ExitCounts VcpuThread::exit_counts() const {
    return ExitCounts { m_io_exits.load(std::memory_order_relaxed), m_mmio_exits.load(std::memory_order_relaxed),
                        m_halt_exits.load(std::memory_order_relaxed), m_other_exits.load(std::memory_order_relaxed) };
}

} // namespace kvmm

// VcpuThread: one vCPU on its own thread, as an explicit state machine.
//
//   Created --start()--> Running --request_pause()--> Paused --resume()--> Running
//   any state --request_stop()--> Stopped   (also when the guest dies or powers off)
//
// Commands are set under m_lock and delivered by "kicking" the thread: the
// vCPU's immediate-exit flag is set and a signal interrupts a KVM_RUN in
// progress, so a vCPU halted inside the kernel also notices. The thread clears
// the flag *before* it reads the command, so a kick can never be lost.
//
// Threading: public methods are called from the VMM's control thread; the
// Vcpu object itself is touched only by the vCPU thread once started.
#pragma once

#include <atomic>

#include "base/thread_annotations.h"
#include "hypervisor/vcpu.h"
#include "vmm/exit_handler.h"
#include "vmm/vm_lifecycle.h"

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace kvmm {

enum class VcpuState { Created, Running, Paused, Stopped };
char const* to_string(VcpuState state);

class VcpuThread {
public:
    // Called first on the new thread, before the vCPU first enters the guest (the sandbox's
    // filter of the vCPU role); an error stops the machine as a VMM failure.
    using ThreadEntry = std::function<Expected<void>(uint32_t index)>;

    VcpuThread(std::unique_ptr<Vcpu> vcpu, IoBuses buses, VmLifecycle& lifecycle, ThreadEntry on_thread_start = {});
    ~VcpuThread();
    VcpuThread(VcpuThread const&) = delete;
    VcpuThread& operator=(VcpuThread const&) = delete;

    // Installs the process-wide handler of the kick signal. Call once before start().
    static void install_kick_signal_handler();

    void start();
    // Asks the vCPU to pause and waits until it has left guest mode.
    void pause();
    void resume();
    // Asks the vCPU to stop; join() waits for the thread to end.
    void request_stop();
    void join();

    VcpuState state() const;
    uint32_t index() const { return m_index; }

    // The vCPU's saved state (Vcpu::save_state/restore_state), read or written from the calling
    // thread while this one is Paused or not yet started; refused, naming the state, otherwise.
    // m_lock is held throughout, so the parked thread cannot resume into the Vcpu meanwhile.
    Expected<X86VcpuState> save_state();
    Expected<void> restore_state(X86VcpuState const& state);

    // Exits by kind since start, for metrics (relaxed atomics: read from any thread).
    struct ExitCounts {
        uint64_t io { 0 };
        uint64_t mmio { 0 };
        uint64_t halt { 0 };
        uint64_t other { 0 };
    };
    ExitCounts exit_counts() const;

private:
    enum class Command { Run, Pause, Stop };

    void thread_main();
    void kick();
    // Returns false when the thread must end.
    bool obey_command();
    void report_death(std::string const& detail);

    std::unique_ptr<Vcpu> m_vcpu;
    uint32_t m_index;
    IoBuses m_buses;
    VmLifecycle& m_lifecycle;
    ThreadEntry m_on_thread_start;
    std::thread m_thread;

    mutable Mutex m_lock; // guards m_command and m_state
    std::condition_variable m_changed;
    Command m_command GUARDED_BY(m_lock) { Command::Run };
    std::atomic<uint64_t> m_io_exits { 0 };
    std::atomic<uint64_t> m_mmio_exits { 0 };
    std::atomic<uint64_t> m_halt_exits { 0 };
    std::atomic<uint64_t> m_other_exits { 0 };
    VcpuState m_state GUARDED_BY(m_lock) { VcpuState::Created };
};

} // namespace kvmm

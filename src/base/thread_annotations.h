// Clang thread-safety analysis (-Wthread-safety): the attribute macros, and a mutex and scoped
// lock that carry them. libstdc++'s std::mutex and std::lock_guard are not annotated, so a
// member marked GUARDED_BY a std::mutex could not be checked; kvmm::Mutex can.
//
// Use:
//   mutable Mutex m_lock;
//   int m_count GUARDED_BY(m_lock) = 0;
//   void bump_locked() REQUIRES(m_lock);       // callers hold m_lock
//   ...
//   MutexLock guard(m_lock);                   // held until the end of the scope
//   guard.wait(m_changed, [&]() REQUIRES(m_lock) { return m_count > 0; });
//
// With any other compiler the macros expand to nothing and the types are plain wrappers.
// Threading: Mutex is a std::mutex (not recursive); a MutexLock belongs to the thread that
// made it and is neither copied nor moved.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define KVMM_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define KVMM_THREAD_ANNOTATION(x)
#endif

// A type that is a lock (a capability named by `name` in the analysis' messages).
#define CAPABILITY(name) KVMM_THREAD_ANNOTATION(capability(name))
// An RAII type that holds a capability for its lifetime.
#define SCOPED_CAPABILITY KVMM_THREAD_ANNOTATION(scoped_lockable)
// A data member that is read and written only while holding the given lock.
#define GUARDED_BY(lock) KVMM_THREAD_ANNOTATION(guarded_by(lock))
// A pointer member whose pointee is accessed only while holding the given lock.
#define PT_GUARDED_BY(lock) KVMM_THREAD_ANNOTATION(pt_guarded_by(lock))
// Lock order: this lock is taken before / after the named ones, never the other way round.
#define ACQUIRED_BEFORE(...) KVMM_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) KVMM_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
// A function that must be called with the given locks held (and returns with them held).
#define REQUIRES(...) KVMM_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
// A function that must be called without the given locks (it takes them itself).
#define EXCLUDES(...) KVMM_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
// A function that takes / releases the given locks (or, on a lock type, itself).
#define ACQUIRE(...) KVMM_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) KVMM_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) KVMM_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
// A function that returns a reference to the given lock.
#define RETURN_CAPABILITY(lock) KVMM_THREAD_ANNOTATION(lock_returned(lock))
// Turns the analysis off for one function; say why next to it.
#define NO_THREAD_SAFETY_ANALYSIS KVMM_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace kvmm {

class CAPABILITY("mutex") Mutex {
public:
    Mutex() = default;
    Mutex(Mutex const&) = delete;
    Mutex& operator=(Mutex const&) = delete;

    void lock() ACQUIRE() { m_mutex.lock(); }
    void unlock() RELEASE() { m_mutex.unlock(); }
    bool try_lock() TRY_ACQUIRE(true) { return m_mutex.try_lock(); }

private:
    friend class MutexLock;
    std::mutex m_mutex;
};

// Holds a Mutex from construction to destruction. The waits release the mutex while they block
// and hold it again when they return, so to the analysis the lock is held throughout; a
// predicate that reads guarded members says so with REQUIRES on the lambda.
class SCOPED_CAPABILITY MutexLock {
public:
    explicit MutexLock(Mutex& mutex) ACQUIRE(mutex) : m_lock(mutex.m_mutex) {}
    ~MutexLock() RELEASE() = default; // std::unique_lock unlocks only if it holds the mutex
    MutexLock(MutexLock const&) = delete;
    MutexLock& operator=(MutexLock const&) = delete;

    // Lets go of the mutex early (e.g. around a blocking call) and takes it again; the
    // destructor releases it only if held.
    void unlock() RELEASE() { m_lock.unlock(); }
    void lock() ACQUIRE() { m_lock.lock(); }

    // The analysis does not follow the predicate into std::condition_variable; the predicate's
    // own REQUIRES is checked where it is written.
    void wait(std::condition_variable& condition) NO_THREAD_SAFETY_ANALYSIS { condition.wait(m_lock); }
    template <typename Predicate>
    void wait(std::condition_variable& condition, Predicate predicate) NO_THREAD_SAFETY_ANALYSIS {
        condition.wait(m_lock, predicate);
    }
    template <typename Clock, typename Duration, typename Predicate>
    bool wait_until(std::condition_variable& condition, std::chrono::time_point<Clock, Duration> const& deadline,
                    Predicate predicate) NO_THREAD_SAFETY_ANALYSIS {
        return condition.wait_until(m_lock, deadline, predicate);
    }
    template <typename Rep, typename Period, typename Predicate>
    bool wait_for(std::condition_variable& condition, std::chrono::duration<Rep, Period> const& timeout,
                  Predicate predicate) NO_THREAD_SAFETY_ANALYSIS {
        return condition.wait_for(m_lock, timeout, predicate);
    }
    template <typename Rep, typename Period>
    std::cv_status wait_for(std::condition_variable& condition,
                            std::chrono::duration<Rep, Period> const& timeout) NO_THREAD_SAFETY_ANALYSIS {
        return condition.wait_for(m_lock, timeout);
    }

private:
    std::unique_lock<std::mutex> m_lock;
};

} // namespace kvmm

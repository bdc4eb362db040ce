// Must NOT compile under clang with -Wthread-safety -Werror: the ctest
// thread_safety_analysis_rejects_unguarded_access checks that the analysis sees through
// base/thread_annotations.h (a macro that expanded to nothing would let this pass silently).
#include "base/thread_annotations.h"

namespace kvmm {

class Unguarded {
public:
    int read_without_lock() const { return m_value; } // the error the test expects
    int read_with_lock() const {
        MutexLock guard(m_lock);
        return m_value;
    }

private:
    mutable Mutex m_lock;
    int m_value GUARDED_BY(m_lock) = 0;
};

int use(Unguarded const& object) { return object.read_without_lock() + object.read_with_lock(); }

} // namespace kvmm

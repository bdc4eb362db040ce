// CompletionQueue: a fixed-capacity FIFO of DiskCompletions, allocated once at
// construction, so that queueing a completion never allocates. The engines use
// it for results known without the kernel's help.
//
// Threading: none; owned by one engine.
#pragma once

#include "backends/disk/disk_engine.h"

#include <cstddef>
#include <vector>

namespace kvmm {

class CompletionQueue {
public:
    explicit CompletionQueue(size_t capacity) : m_entries(capacity) {}

    // Returns false (and drops nothing already queued) when full.
    bool push(DiskCompletion completion) {
        if (m_count == m_entries.size())
            return false;
        m_entries[(m_head + m_count) % m_entries.size()] = completion;
        ++m_count;
        return true;
    }

    bool pop(DiskCompletion& completion) {
        if (m_count == 0)
            return false;
        completion = m_entries[m_head];
        m_head = (m_head + 1) % m_entries.size();
        --m_count;
        return true;
    }

    size_t size() const { return m_count; }
    bool empty() const { return m_count == 0; }

private:
    std::vector<DiskCompletion> m_entries;
    size_t m_head { 0 };
    size_t m_count { 0 };
};

} // namespace kvmm

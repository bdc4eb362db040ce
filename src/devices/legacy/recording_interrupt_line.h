// Test helper: an InterruptLine that records every level it was driven to.
#pragma once

#include "devices/bus/bus_device.h"

#include <vector>

namespace kvmm {

class RecordingInterruptLine final : public InterruptLine {
public:
    void set_level(bool level) override { levels.push_back(level); }
    bool level() const { return !levels.empty() && levels.back(); }
    std::vector<bool> levels;
};

} // namespace kvmm

#include "devices/bus/bus.h"

#include "base/checked_math.h"

#include <algorithm>
#include <cstring>

namespace kvmm {

Expected<void> Bus::insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t length) {
    auto const end = checked_add(base, length);
    if (length == 0 || !end)
        return Error::format("{} bus: invalid range at {:#x} with length {:#x}", m_name, base, length);
    for (auto const& range : m_ranges) {
        if (base < range.base + range.length && range.base < *end)
            return Error::format("{} bus: range [{:#x}, {:#x}) overlaps [{:#x}, {:#x})", m_name, base, *end, range.base,
                                 range.base + range.length);
    }
    auto position = std::lower_bound(m_ranges.begin(), m_ranges.end(), base,
                                     [](Range const& range, uint64_t value) { return range.base < value; });
    m_ranges.insert(position, Range { base, length, std::move(device) });
    return {};
}

Bus::Range const* Bus::find(uint64_t address, uint64_t length) const {
    // The last range whose base is <= address is the only candidate.
    auto position = std::upper_bound(m_ranges.begin(), m_ranges.end(), address,
                                     [](uint64_t value, Range const& range) { return value < range.base; });
    if (position == m_ranges.begin())
        return nullptr;
    --position;
    auto const offset = address - position->base;
    if (offset >= position->length || length > position->length - offset)
        return nullptr;
    return &*position;
}

bool Bus::read(uint64_t address, std::span<uint8_t> data) const {
    auto const* range = find(address, data.size());
    if (!range) {
        std::memset(data.data(), 0xff, data.size());
        return false;
    }
    range->device->read(address - range->base, data);
    return true;
}

bool Bus::write(uint64_t address, std::span<uint8_t const> data) const {
    auto const* range = find(address, data.size());
    if (!range)
        return false;
    range->device->write(address - range->base, data);
    return true;
}

} // namespace kvmm

// libFuzzer target: a hostile write recording (backends/disk/write_log_format.h), as
// kvmm-crash-check reads one. The parser must refuse or accept it without reading outside the
// input, and every record it accepts must lie inside the capacity and the input.
#include "backends/disk/write_log_format.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    auto const bytes = std::as_bytes(std::span(data, size));
    auto const log = kvmm::parse_write_log(bytes);
    if (!log)
        return 0;
    for (auto const& record : log->records) {
        if (record.type == kvmm::WriteLogRecordType::Flush)
            continue;
        if (record.sector >= log->header.capacity_sectors)
            std::abort();
        if (record.type == kvmm::WriteLogRecordType::Write &&
            (record.data.size() != record.length || record.data.data() < bytes.data() ||
             record.data.data() + record.data.size() > bytes.data() + bytes.size()))
            std::abort();
    }
    return 0;
}

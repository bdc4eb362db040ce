#include "devices/fw_cfg/table_loader.h"

#include "devices/fw_cfg/fw_cfg.h"

#include <algorithm>
#include <cstring>

namespace kvmm {

namespace {

void store_le32(uint8_t* bytes, uint32_t value) {
    for (int i = 0; i < 4; ++i)
        bytes[i] = static_cast<uint8_t>(value >> (8 * i));
}

Expected<void> check_name(std::string const& file) {
    if (file.empty() || file.size() >= fw_cfg::FILE_NAME_SIZE)
        return Error::format("table-loader file name '{}' must have 1 to {} characters", file,
                             fw_cfg::FILE_NAME_SIZE - 1);
    return {};
}

} // namespace

Expected<uint64_t> TableLoader::size_of(std::string const& file) const {
    auto found =
        std::find_if(m_files.begin(), m_files.end(), [&](Allocated const& entry) { return entry.name == file; });
    if (found == m_files.end())
        return Error::format("table-loader file '{}' is not allocated", file);
    return found->size;
}

uint8_t* TableLoader::begin_command(uint32_t command) {
    m_script.resize(m_script.size() + COMMAND_SIZE, 0);
    uint8_t* entry = m_script.data() + m_script.size() - COMMAND_SIZE;
    store_le32(entry, command);
    return entry;
}

Expected<void> TableLoader::allocate(std::string const& file, uint64_t size, uint32_t alignment, Zone zone) {
    TRY(check_name(file));
    if (size_of(file))
        return Error::format("table-loader file '{}' is allocated twice", file);
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        return Error::format("table-loader alignment {} of '{}' is not a power of two", alignment, file);
    if (size == 0 || size > UINT32_MAX)
        return Error::format("table-loader file '{}' has size {}, outside 1 byte to 4 GiB", file, size);
    m_files.push_back(Allocated { file, size });
    uint8_t* entry = begin_command(COMMAND_ALLOCATE);
    std::copy(file.begin(), file.end(), entry + 4); // NUL-padded: the entry is zeroed
    store_le32(entry + 4 + fw_cfg::FILE_NAME_SIZE, alignment);
    entry[4 + fw_cfg::FILE_NAME_SIZE + 4] = static_cast<uint8_t>(zone);
    return {};
}

Expected<void> TableLoader::add_pointer(std::string const& destination, std::string const& source, uint32_t offset,
                                        uint8_t size) {
    auto const destination_size = TRY(size_of(destination));
    TRY(size_of(source));
    if (size != 1 && size != 2 && size != 4 && size != 8)
        return Error::format("table-loader pointer in '{}' at {} has size {}, not 1, 2, 4 or 8", destination, offset,
                             size);
    if (uint64_t { offset } + size > destination_size)
        return Error::format("table-loader pointer at {}+{} lies outside '{}' ({} bytes)", offset, size, destination,
                             destination_size);
    uint8_t* entry = begin_command(COMMAND_ADD_POINTER);
    std::copy(destination.begin(), destination.end(), entry + 4);
    std::copy(source.begin(), source.end(), entry + 4 + fw_cfg::FILE_NAME_SIZE);
    store_le32(entry + 4 + 2 * fw_cfg::FILE_NAME_SIZE, offset);
    entry[4 + 2 * fw_cfg::FILE_NAME_SIZE + 4] = size;
    return {};
}

Expected<void> TableLoader::add_checksum(std::string const& file, uint32_t offset, uint32_t start, uint32_t length) {
    auto const file_size = TRY(size_of(file));
    if (offset >= file_size || uint64_t { start } + length > file_size)
        return Error::format("table-loader checksum at {} over [{}, +{}) lies outside '{}' ({} bytes)", offset, start,
                             length, file, file_size);
    uint8_t* entry = begin_command(COMMAND_ADD_CHECKSUM);
    std::copy(file.begin(), file.end(), entry + 4);
    store_le32(entry + 4 + fw_cfg::FILE_NAME_SIZE, offset);
    store_le32(entry + 4 + fw_cfg::FILE_NAME_SIZE + 4, start);
    store_le32(entry + 4 + fw_cfg::FILE_NAME_SIZE + 8, length);
    return {};
}

} // namespace kvmm

#include "devices/fw_cfg/fw_cfg.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace kvmm {

namespace {

uint32_t load_be32(uint8_t const* bytes) {
    return (uint32_t { bytes[0] } << 24) | (uint32_t { bytes[1] } << 16) | (uint32_t { bytes[2] } << 8) | bytes[3];
}

void store_be32(uint8_t* bytes, uint32_t value) {
    for (int i = 0; i < 4; ++i)
        bytes[i] = static_cast<uint8_t>(value >> (24 - 8 * i));
}

std::vector<uint8_t> little_endian(uint64_t value, size_t width) {
    std::vector<uint8_t> bytes(width);
    for (size_t i = 0; i < width; ++i)
        bytes[i] = static_cast<uint8_t>(value >> (8 * i));
    return bytes;
}

} // namespace

void FwCfgState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u16(selector);
    writer.u32(offset);
    writer.u32(dma_address_high);
    writer.end_section();
}

Expected<FwCfgState> FwCfgState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    FwCfgState state;
    state.selector = TRY(reader.u16("selector"));
    state.offset = TRY(reader.u32("offset"));
    state.dma_address_high = TRY(reader.u32("dma_address_high"));
    TRY(reader.end_section());
    return state;
}

FwCfg::FwCfg(GuestMemory const& memory) : m_memory(memory) {
    m_items[fw_cfg::SIGNATURE] = { 'Q', 'E', 'M', 'U' };
    m_items[fw_cfg::ID] = little_endian(fw_cfg::ID_TRADITIONAL | fw_cfg::ID_DMA, 4);
    rebuild_directory();
}

Expected<void> FwCfg::add_item(uint16_t key, std::vector<uint8_t> data) {
    if ((key & fw_cfg::KEY_MASK) >= fw_cfg::FILE_DIR && (key & fw_cfg::SELECTOR_ARCH) == 0)
        return Error::format("fw_cfg key {:#x} belongs to the file directory; add it as a file", key);
    if ((key & fw_cfg::SELECTOR_WRITE) != 0)
        return Error::format("fw_cfg key {:#x} has the write bit set", key);
    if (data.size() > UINT32_MAX)
        return Error::format("fw_cfg item {:#x} is {} bytes, more than 4 GiB", key, data.size());
    m_items[key] = std::move(data);
    return {};
}

Expected<uint16_t> FwCfg::add_file(std::string name, std::vector<uint8_t> data) {
    if (name.empty() || name.size() >= fw_cfg::FILE_NAME_SIZE)
        return Error::format("fw_cfg file name '{}' must have 1 to {} characters", name, fw_cfg::FILE_NAME_SIZE - 1);
    if (name.find('\0') != std::string::npos)
        return Error::format("fw_cfg file name '{}' contains a NUL byte", name);
    if (std::any_of(m_files.begin(), m_files.end(), [&](File const& file) { return file.name == name; }))
        return Error::format("fw_cfg file '{}' is already present", name);
    if (m_next_file_key > fw_cfg::FILE_LAST)
        return Error::format("fw_cfg has no key left for file '{}' ({} files)", name, m_files.size());
    if (data.size() > UINT32_MAX)
        return Error::format("fw_cfg file '{}' is {} bytes, more than 4 GiB", name, data.size());
    uint16_t const key = m_next_file_key++;
    m_items[key] = std::move(data);
    m_files.push_back(File { std::move(name), key });
    rebuild_directory();
    return key;
}

Expected<void> FwCfg::add_u16(uint16_t key, uint16_t value) { return add_item(key, little_endian(value, 2)); }
Expected<void> FwCfg::add_u32(uint16_t key, uint32_t value) { return add_item(key, little_endian(value, 4)); }
Expected<void> FwCfg::add_u64(uint16_t key, uint64_t value) { return add_item(key, little_endian(value, 8)); }

std::vector<uint8_t> FwCfg::item(uint16_t key) const {
    auto found = m_items.find(key);
    return found == m_items.end() ? std::vector<uint8_t> {} : found->second;
}

// The directory (fw_cfg.rst "File Directory"): a big-endian count, then per file a big-endian
// size and key, two reserved bytes and the NUL-padded name, sorted by name as QEMU sorts them
// (firmware may search it by bisection).
void FwCfg::rebuild_directory() {
    auto files = m_files;
    std::sort(files.begin(), files.end(), [](File const& a, File const& b) { return a.name < b.name; });
    std::vector<uint8_t> directory(4 + files.size() * fw_cfg::FILE_DIR_ENTRY_SIZE, 0);
    store_be32(directory.data(), static_cast<uint32_t>(files.size()));
    for (size_t i = 0; i < files.size(); ++i) {
        uint8_t* entry = directory.data() + 4 + i * fw_cfg::FILE_DIR_ENTRY_SIZE;
        store_be32(entry, static_cast<uint32_t>(m_items[files[i].key].size()));
        entry[4] = static_cast<uint8_t>(files[i].key >> 8);
        entry[5] = static_cast<uint8_t>(files[i].key);
        std::copy(files[i].name.begin(), files[i].name.end(), entry + 8); // NUL-padded: the entry is zeroed
    }
    m_items[fw_cfg::FILE_DIR] = std::move(directory);
}

std::vector<uint8_t> const* FwCfg::selected_item() const {
    // The write bit asks for a legacy write, which selects the same item.
    auto found = m_items.find(static_cast<uint16_t>(m_selector & ~fw_cfg::SELECTOR_WRITE));
    return found == m_items.end() ? nullptr : &found->second;
}

void FwCfg::select(uint16_t selector) {
    m_selector = selector;
    m_offset = 0;
}

void FwCfg::read(uint64_t offset, std::span<uint8_t> data) {
    MutexLock guard(m_lock);
    std::fill(data.begin(), data.end(), 0);
    if (offset == fw_cfg::DATA_OFFSET && data.size() == 1) {
        auto const* item = selected_item();
        if (item && m_offset < item->size())
            data[0] = (*item)[m_offset++];
        return;
    }
    // The DMA address register reads as the signature (fw_cfg.rst "DMA Address Register").
    if (offset >= fw_cfg::DMA_OFFSET && offset + data.size() <= fw_cfg::PORT_LENGTH) {
        for (size_t i = 0; i < data.size(); ++i) {
            auto const byte_index = offset - fw_cfg::DMA_OFFSET + i; // 0 = most significant
            data[i] = static_cast<uint8_t>(fw_cfg::DMA_SIGNATURE >> (56 - 8 * byte_index));
        }
    }
}

void FwCfg::write(uint64_t offset, std::span<uint8_t const> data) {
    MutexLock guard(m_lock);
    if (offset == fw_cfg::SELECTOR_OFFSET && data.size() == 2) {
        select(static_cast<uint16_t>(data[0] | (data[1] << 8)));
        return;
    }
    // The address register's bytes arrive in memory order, most significant first: the guest
    // writes cpu_to_be32 of each half. Writing the low half starts the transfer.
    if (offset == fw_cfg::DMA_OFFSET && data.size() == 4) {
        m_dma_address_high = load_be32(data.data());
        return;
    }
    if (offset == fw_cfg::DMA_OFFSET + 4 && data.size() == 4) {
        uint64_t const address = (uint64_t { m_dma_address_high } << 32) | load_be32(data.data());
        m_dma_address_high = 0;
        run_dma(address);
        return;
    }
    // Anything else (data-port writes, odd widths) is ignored, as QEMU ignores it.
}

void FwCfg::run_dma(uint64_t access_address) {
    std::array<uint8_t, fw_cfg::DMA_ACCESS_SIZE> access {};
    // An access structure outside RAM cannot even be answered; the guest sees no completion.
    if (!m_memory.read(GuestAddress(access_address), std::as_writable_bytes(std::span(access))))
        return;
    uint32_t const control = load_be32(access.data());
    uint32_t const length = load_be32(access.data() + 4);
    uint64_t const address = (uint64_t { load_be32(access.data() + 8) } << 32) | load_be32(access.data() + 12);
    if ((control & fw_cfg::DMA_SELECT) != 0)
        select(static_cast<uint16_t>(control >> 16));
    bool const ok = transfer(control, length, address);
    std::array<uint8_t, 4> result {};
    store_be32(result.data(), ok ? 0 : fw_cfg::DMA_ERROR);
    (void)m_memory.write(GuestAddress(access_address), std::as_bytes(std::span(result)));
}

bool FwCfg::transfer(uint32_t control, uint32_t length, uint64_t address) {
    // One operation per access, in QEMU's order of precedence: read, then write, then skip.
    auto const* item = selected_item();
    uint64_t const item_size = item ? item->size() : 0;
    uint64_t const available = m_offset < item_size ? item_size - m_offset : 0;
    if ((control & fw_cfg::DMA_READ) != 0) {
        // Bytes of the item first, then zeros for what the request asks past its end.
        uint64_t const from_item = std::min<uint64_t>(length, available);
        if (from_item > 0) {
            auto const bytes = std::span(item->data() + m_offset, from_item);
            if (!m_memory.write(GuestAddress(address), std::as_bytes(bytes)))
                return false;
            m_offset += static_cast<uint32_t>(from_item);
        }
        if (length > from_item) {
            // address + from_item cannot wrap: the write above checked that range.
            if (!m_memory.fill_zero(GuestAddress(address + from_item), length - from_item))
                return false;
        }
        return true;
    }
    if ((control & fw_cfg::DMA_WRITE) != 0)
        return length == 0; // no item is writable: the guest's data goes nowhere
    if ((control & fw_cfg::DMA_SKIP) != 0) {
        m_offset += static_cast<uint32_t>(std::min<uint64_t>(length, available));
        return true;
    }
    return true; // select only (or nothing at all)
}

FwCfgState FwCfg::save() const {
    MutexLock guard(m_lock);
    return FwCfgState { m_selector, m_offset, m_dma_address_high };
}

Expected<void> FwCfg::restore(FwCfgState const& state) {
    MutexLock guard(m_lock);
    m_selector = state.selector;
    m_offset = state.offset;
    m_dma_address_high = state.dma_address_high;
    return {};
}

} // namespace kvmm

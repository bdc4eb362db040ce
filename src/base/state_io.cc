#include "base/state_io.h"

#include <zlib.h>

#include <array>
#include <bit>
#include <cassert>
#include <cstring>

namespace kvmm {

static_assert(std::endian::native == std::endian::little, "state fields are stored as the host's little-endian");

namespace {

constexpr std::array<char, 8> MAGIC { 'K', 'V', 'M', 'M', 'S', 'T', 'A', 'T' };
constexpr size_t CONTAINER_HEADER_SIZE = 8 + 4 + 4 + 8 + 4 + 4;
// Section names are short identifiers ("virtio-blk", "queue0"); a longer one is malformed.
constexpr size_t MAX_SECTION_NAME = 64;

template <typename T>
void append(std::vector<std::byte>& out, T value) {
    auto const* bytes = reinterpret_cast<std::byte const*>(&value);
    out.insert(out.end(), bytes, bytes + sizeof(T));
}

template <typename T>
T load(std::span<std::byte const> bytes) {
    T value;
    std::memcpy(&value, bytes.data(), sizeof(T));
    return value;
}

// CRC-32 (ISO-HDLC, as zlib computes it) of a payload of any size.
uint32_t checksum(std::span<std::byte const> payload) {
    uLong crc = ::crc32(0L, Z_NULL, 0);
    auto const* data = reinterpret_cast<Bytef const*>(payload.data());
    size_t left = payload.size();
    while (left > 0) {
        auto const piece = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
        crc = ::crc32(crc, data, piece);
        data += piece;
        left -= piece;
    }
    return static_cast<uint32_t>(crc);
}

} // namespace

void StateWriter::u8(uint8_t value) { append(m_payload, value); }
void StateWriter::u16(uint16_t value) { append(m_payload, value); }
void StateWriter::u32(uint32_t value) { append(m_payload, value); }
void StateWriter::u64(uint64_t value) { append(m_payload, value); }

void StateWriter::bytes(std::span<std::byte const> value) {
    u64(value.size());
    m_payload.insert(m_payload.end(), value.begin(), value.end());
}

void StateWriter::begin_section(std::string_view name, uint32_t version) {
    // Section names are the components' own short constants; the reader refuses longer ones.
    assert(name.size() <= MAX_SECTION_NAME);
    u16(static_cast<uint16_t>(name.size()));
    auto const* characters = reinterpret_cast<std::byte const*>(name.data());
    m_payload.insert(m_payload.end(), characters, characters + name.size());
    u32(version);
    m_open_sections.push_back(m_payload.size());
    u64(0); // the body length, filled in by end_section()
}

void StateWriter::end_section() {
    assert(!m_open_sections.empty());
    size_t const length_at = m_open_sections.back();
    m_open_sections.pop_back();
    uint64_t const body = m_payload.size() - (length_at + sizeof(uint64_t));
    std::memcpy(m_payload.data() + length_at, &body, sizeof(body));
}

size_t StateReader::limit() const { return m_sections.empty() ? m_data.size() : m_sections.back().end; }

std::string StateReader::where(std::string_view field) const {
    std::string path;
    for (auto const& section : m_sections) {
        path += section.name;
        path += '/';
    }
    path += field;
    return path;
}

Expected<std::span<std::byte const>> StateReader::take(std::string_view field, uint64_t length) {
    size_t const left = limit() - m_position;
    if (length > left)
        return Error::format("saved state {}: truncated: needs {} bytes, {} left", where(field), length, left);
    auto const taken = m_data.subspan(m_position, static_cast<size_t>(length));
    m_position += static_cast<size_t>(length);
    return taken;
}

Expected<uint8_t> StateReader::u8(std::string_view field) { return load<uint8_t>(TRY(take(field, 1))); }
Expected<uint16_t> StateReader::u16(std::string_view field) { return load<uint16_t>(TRY(take(field, 2))); }
Expected<uint32_t> StateReader::u32(std::string_view field) { return load<uint32_t>(TRY(take(field, 4))); }
Expected<uint64_t> StateReader::u64(std::string_view field) { return load<uint64_t>(TRY(take(field, 8))); }

Expected<bool> StateReader::boolean(std::string_view field) {
    uint8_t const value = TRY(u8(field));
    if (value > 1)
        return Error::format("saved state {}: {} is not a boolean (0 or 1)", where(field), value);
    return value == 1;
}

Expected<uint64_t> StateReader::u64_in_range(std::string_view field, uint64_t minimum, uint64_t maximum) {
    uint64_t const value = TRY(u64(field));
    if (value < minimum || value > maximum)
        return Error::format("saved state {}: {} is outside [{}, {}]", where(field), value, minimum, maximum);
    return value;
}

Expected<std::vector<std::byte>> StateReader::bytes(std::string_view field, uint64_t max_length) {
    uint64_t const length = TRY(u64(field));
    if (length > max_length)
        return Error::format("saved state {}: length {} is more than the {} allowed", where(field), length, max_length);
    auto const taken = TRY(take(field, length));
    return std::vector<std::byte>(taken.begin(), taken.end());
}

Expected<std::string> StateReader::string(std::string_view field, uint64_t max_length) {
    auto const raw = TRY(bytes(field, max_length));
    return std::string(reinterpret_cast<char const*>(raw.data()), raw.size());
}

Expected<uint32_t> StateReader::begin_section(std::string_view name, uint32_t max_version) {
    std::string const field = fmt::format("{} (section)", name);
    uint16_t const name_length = TRY(u16(field));
    if (name_length > MAX_SECTION_NAME)
        return Error::format("saved state {}: section name of {} bytes, at most {}", where(field), name_length,
                             MAX_SECTION_NAME);
    auto const found = TRY(take(field, name_length));
    std::string_view const found_name(reinterpret_cast<char const*>(found.data()), found.size());
    if (found_name != name)
        return Error::format("saved state {}: found section '{}' instead", where(field), found_name);
    uint32_t const version = TRY(u32(field));
    if (version == 0 || version > max_version)
        return Error::format("saved state {}: version {} is not one this kvmm reads (1 to {})", where(field), version,
                             max_version);
    uint64_t const body = TRY(u64(field));
    if (body > limit() - m_position)
        return Error::format("saved state {}: body of {} bytes runs past its enclosing section ({} left)", where(field),
                             body, limit() - m_position);
    m_sections.push_back(Open { std::string(name), m_position + static_cast<size_t>(body) });
    return version;
}

Expected<void> StateReader::end_section() {
    if (m_sections.empty())
        return Error("saved state: end of a section that was not opened");
    auto const& open = m_sections.back();
    if (m_position != open.end)
        return Error::format("saved state {}: {} bytes left unread at the end of the section", where(""),
                             open.end - m_position);
    m_sections.pop_back();
    return {};
}

std::vector<std::byte> seal_state(std::span<std::byte const> payload) {
    std::vector<std::byte> blob;
    blob.reserve(CONTAINER_HEADER_SIZE + payload.size());
    auto const* magic = reinterpret_cast<std::byte const*>(MAGIC.data());
    blob.insert(blob.end(), magic, magic + MAGIC.size());
    append(blob, STATE_FORMAT_VERSION);
    append(blob, uint32_t { 0 }); // flags
    append(blob, uint64_t { payload.size() });
    append(blob, checksum(payload));
    append(blob, uint32_t { 0 }); // reserved
    blob.insert(blob.end(), payload.begin(), payload.end());
    return blob;
}

Expected<std::span<std::byte const>> open_state(std::span<std::byte const> blob) {
    if (blob.size() < CONTAINER_HEADER_SIZE)
        return Error::format("saved state: {} bytes, shorter than the {}-byte header", blob.size(),
                             CONTAINER_HEADER_SIZE);
    if (std::memcmp(blob.data(), MAGIC.data(), MAGIC.size()) != 0)
        return Error("saved state: magic: not a kvmm state file");
    auto const version = load<uint32_t>(blob.subspan(8));
    if (version != STATE_FORMAT_VERSION)
        return Error::format("saved state: format version {} is not {}", version, STATE_FORMAT_VERSION);
    auto const flags = load<uint32_t>(blob.subspan(12));
    if (flags != 0)
        return Error::format("saved state: flags {:#x}: no flags are defined", flags);
    auto const length = load<uint64_t>(blob.subspan(16));
    if (length != blob.size() - CONTAINER_HEADER_SIZE)
        return Error::format("saved state: payload length {} but {} bytes follow the header", length,
                             blob.size() - CONTAINER_HEADER_SIZE);
    auto const payload = blob.subspan(CONTAINER_HEADER_SIZE);
    auto const expected = load<uint32_t>(blob.subspan(24));
    if (uint32_t const actual = checksum(payload); actual != expected)
        return Error::format("saved state: checksum {:#010x} does not match the payload's {:#010x}", expected, actual);
    if (auto const reserved = load<uint32_t>(blob.subspan(28)); reserved != 0)
        return Error::format("saved state: reserved field is {:#x}, not 0", reserved);
    return payload;
}

} // namespace kvmm

// The machine-state serialisation format: how a component's saved state (a plain, versioned
// struct, see docs/ARCHITECTURE.md "Saved state") becomes bytes and comes back.
//
// A state blob is a sealed container around a sequence of sections:
//   container: magic "KVMMSTAT" | u32 format version | u32 flags (0) | u64 payload length |
//              u32 CRC-32 of the payload | u32 reserved (0) | payload
//   section:   u16 name length | name | u32 component version | u64 body length | body
//   fields:    little-endian u8/u16/u32/u64, bool as u8 0/1, byte strings as u64 length + bytes
// Sections nest (a device section holds its queues' sections) and carry the version of the
// component that wrote them, so a reader accepts exactly the versions it knows.
//
// A blob is untrusted input (a snapshot file, a migration stream): every read is bounds-checked
// against the enclosing section, every length against a caller-given maximum, and each error
// names the section and field ("virtio-blk/queue0.next_available: truncated: needs 2 bytes,
// 1 left"). Nothing is allocated beyond what a field's maximum allows.
//
// Threading: StateWriter and StateReader are plain single-thread values.
#pragma once

#include "base/expected.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm {

class StateWriter {
public:
    void u8(uint8_t value);
    void u16(uint16_t value);
    void u32(uint32_t value);
    void u64(uint64_t value);
    void boolean(bool value) { u8(value ? 1 : 0); }
    void bytes(std::span<std::byte const> value);
    void bytes(std::span<uint8_t const> value) { bytes(std::as_bytes(value)); }
    void string(std::string_view value) { bytes(std::as_bytes(std::span(value.data(), value.size()))); }

    // Opens a section; every field written until the matching end_section() belongs to it.
    void begin_section(std::string_view name, uint32_t version);
    void end_section();

    // The payload so far (every section must be closed).
    std::vector<std::byte> const& payload() const { return m_payload; }

private:
    std::vector<std::byte> m_payload;
    std::vector<size_t> m_open_sections; // offsets of the open sections' body-length fields
};

class StateReader {
public:
    explicit StateReader(std::span<std::byte const> payload) : m_data(payload) {}

    // Each read names its field for the error; the current section path is added.
    Expected<uint8_t> u8(std::string_view field);
    Expected<uint16_t> u16(std::string_view field);
    Expected<uint32_t> u32(std::string_view field);
    Expected<uint64_t> u64(std::string_view field);
    Expected<bool> boolean(std::string_view field);
    // A byte string of at most `max_length` bytes.
    Expected<std::vector<std::byte>> bytes(std::string_view field, uint64_t max_length);
    Expected<std::string> string(std::string_view field, uint64_t max_length);
    // A value that must lie in [minimum, maximum], e.g. an index into a fixed table.
    Expected<uint64_t> u64_in_range(std::string_view field, uint64_t minimum, uint64_t maximum);

    // Opens the next section, which must be called `name` with a version in [1, max_version];
    // returns the version the writer used.
    Expected<uint32_t> begin_section(std::string_view name, uint32_t max_version);
    // Closes the current section; its body must have been read to the end exactly.
    Expected<void> end_section();
    // Whether the whole payload has been read (every section closed).
    bool at_end() const { return m_sections.empty() && m_position == m_data.size(); }

private:
    struct Open {
        std::string name;
        size_t end; // offset one past the section's body
    };

    // What is left to read in the current section (or the payload).
    size_t limit() const;
    Expected<std::span<std::byte const>> take(std::string_view field, uint64_t length);
    std::string where(std::string_view field) const;

    std::span<std::byte const> m_data;
    size_t m_position { 0 };
    std::vector<Open> m_sections;
};

// The container around a payload, and its checks: magic, format version, flags, length,
// checksum. open_state returns the payload inside `blob` (no copy).
inline constexpr uint32_t STATE_FORMAT_VERSION = 1;
std::vector<std::byte> seal_state(std::span<std::byte const> payload);
Expected<std::span<std::byte const>> open_state(std::span<std::byte const> blob);

} // namespace kvmm

// The device-specific configuration space (virtio 1.2 section 4.2.2, offset 0x100 of a
// virtio-mmio window): the one place where a driver's access of `length` bytes at `offset` is
// mapped onto a device's configuration structure.
//
// The driver chooses offset and length (1, 2, 4 or 8 bytes anywhere in the transport's
// window), so every access is bounds-checked here without overflow: bytes past the end of the
// structure read as zero and are ignored on write, as 4.2.2 leaves them undefined and a driver
// must not rely on them. The structure's fields are little-endian (x86-64 is, so they are
// stored as native integers).
//
// Threading: pure functions on the caller's buffers; a device that changes its configuration
// at run time guards the image it passes here (read_config() runs on vCPU threads).
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

namespace kvmm::virtio {

static_assert(std::endian::native == std::endian::little);

// Fills `data` with the bytes [offset, offset + data.size()) of `config`; what lies beyond the
// end of `config` reads as zero.
void read_config_window(std::span<uint8_t const> config, uint64_t offset, std::span<uint8_t> data);

// A driver wrote `data` at `offset`. The bytes that land inside the one field the driver may
// write, bytes [field_offset, field_offset + field.size()) of the structure, replace that
// field's bytes; the rest of the write is ignored. Returns how many bytes were ignored (a
// device may log a write that touches read-only fields).
size_t write_config_field(std::span<uint8_t> field, uint64_t field_offset, uint64_t offset,
                          std::span<uint8_t const> data);

// Stores `value` (little-endian) at byte `Offset` of a configuration image; a field that does
// not fit is a compile-time error.
template <size_t Offset, typename T, size_t N>
void put_config(std::array<uint8_t, N>& config, T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    static_assert(Offset + sizeof(T) <= N, "the field runs past the end of the configuration structure");
    std::memcpy(config.data() + Offset, &value, sizeof(T));
}

} // namespace kvmm::virtio

// Aml: a small encoder for the ACPI Machine Language subset kvmm's DSDT needs
// (ACPI 6.5 section 20, "ACPI Machine Language Specification"): names,
// scopes, devices, packages, buffers, integers, strings, EISA IDs and the
// resource descriptors of section 6.4 for _CRS.
//
// Hand-written because no Debian-packaged library emits AML; iasl compiles
// ASL source at build time only and would add a tool dependency for a few
// hundred bytes of table.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace kvmm::x86_64::aml {

using Bytes = std::vector<uint8_t>;

// PkgLength (20.2.4): encodes `content_length` plus the length field itself, 1 to 4 bytes.
Bytes package_length(size_t content_length);

// A NameString: 4-character segments separated by '.', optional leading '\' (20.2.2).
// Segments shorter than 4 characters are padded with '_'.
Bytes name_string(std::string_view path);

Bytes integer(uint64_t value);
Bytes string(std::string_view text);
// EISA ID such as "PNP0501", compressed into a DWord (6.1.5 _HID).
Bytes eisa_id(std::string_view id);
uint32_t eisa_id_value(std::string_view id);

Bytes name(std::string_view path, Bytes const& value);
Bytes scope(std::string_view path, Bytes const& body);
Bytes device(std::string_view path, Bytes const& body);
Bytes package(std::vector<Bytes> const& elements);
Bytes buffer(Bytes const& content);

// Resource descriptors (6.4), concatenated and closed by resource_template().
Bytes io_port(uint16_t base, uint8_t length);
Bytes irq_no_flags(uint8_t irq);
Bytes memory32_fixed(uint32_t base, uint32_t length, bool writable);
Bytes extended_interrupt(uint32_t gsi, bool edge_triggered, bool active_low);
// Buffer holding the descriptors and an End Tag.
Bytes resource_template(std::vector<Bytes> const& descriptors);

Bytes concat(std::vector<Bytes> const& parts);

} // namespace kvmm::x86_64::aml

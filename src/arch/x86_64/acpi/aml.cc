#include "arch/x86_64/acpi/aml.h"

namespace kvmm::x86_64::aml {

namespace {

constexpr uint8_t ZERO_OP = 0x00;
constexpr uint8_t ONE_OP = 0x01;
constexpr uint8_t NAME_OP = 0x08;
constexpr uint8_t BYTE_PREFIX = 0x0a;
constexpr uint8_t WORD_PREFIX = 0x0b;
constexpr uint8_t DWORD_PREFIX = 0x0c;
constexpr uint8_t STRING_PREFIX = 0x0d;
constexpr uint8_t QWORD_PREFIX = 0x0e;
constexpr uint8_t SCOPE_OP = 0x10;
constexpr uint8_t BUFFER_OP = 0x11;
constexpr uint8_t PACKAGE_OP = 0x12;
constexpr uint8_t EXT_OP_PREFIX = 0x5b;
constexpr uint8_t DEVICE_OP = 0x82;
constexpr uint8_t ROOT_CHAR = '\\';
constexpr uint8_t DUAL_NAME_PREFIX = 0x2e;
constexpr uint8_t MULTI_NAME_PREFIX = 0x2f;

void append(Bytes& to, Bytes const& from) { to.insert(to.end(), from.begin(), from.end()); }

void append_le(Bytes& to, uint64_t value, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i)
        to.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

// opcode(s) PkgLength body
Bytes with_package_length(Bytes const& opcode, Bytes const& body) {
    Bytes result = opcode;
    append(result, package_length(body.size()));
    append(result, body);
    return result;
}

} // namespace

Bytes package_length(size_t content_length) {
    // One byte holds lengths up to 63; longer ones use bits 7:6 for the count of extra bytes,
    // bits 3:0 for the low nibble, and each extra byte for the next 8 bits.
    if (content_length + 1 <= 0x3f)
        return { static_cast<uint8_t>(content_length + 1) };
    for (size_t extra = 1; extra <= 3; ++extra) {
        size_t const total = content_length + 1 + extra;
        if (total < (size_t(1) << (4 + 8 * extra))) {
            Bytes result { static_cast<uint8_t>((extra << 6) | (total & 0x0f)) };
            for (size_t i = 0; i < extra; ++i)
                result.push_back(static_cast<uint8_t>(total >> (4 + 8 * i)));
            return result;
        }
    }
    return {}; // 2^28 bytes of AML: never produced by this encoder's callers
}

Bytes name_string(std::string_view path) {
    Bytes result;
    if (!path.empty() && path.front() == '\\') {
        result.push_back(ROOT_CHAR);
        path.remove_prefix(1);
    }
    std::vector<std::string_view> segments;
    while (!path.empty()) {
        auto const dot = path.find('.');
        segments.push_back(path.substr(0, dot));
        path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
    }
    if (segments.size() == 2)
        result.push_back(DUAL_NAME_PREFIX);
    else if (segments.size() > 2) {
        result.push_back(MULTI_NAME_PREFIX);
        result.push_back(static_cast<uint8_t>(segments.size()));
    }
    for (auto segment : segments) {
        for (size_t i = 0; i < 4; ++i)
            result.push_back(i < segment.size() ? static_cast<uint8_t>(segment[i]) : '_');
    }
    return result;
}

Bytes integer(uint64_t value) {
    if (value == 0)
        return { ZERO_OP };
    if (value == 1)
        return { ONE_OP };
    Bytes result;
    if (value <= 0xff) {
        result.push_back(BYTE_PREFIX);
        append_le(result, value, 1);
    } else if (value <= 0xffff) {
        result.push_back(WORD_PREFIX);
        append_le(result, value, 2);
    } else if (value <= 0xffffffff) {
        result.push_back(DWORD_PREFIX);
        append_le(result, value, 4);
    } else {
        result.push_back(QWORD_PREFIX);
        append_le(result, value, 8);
    }
    return result;
}

Bytes string(std::string_view text) {
    Bytes result(text.size() + 2, 0); // prefix, characters, NUL
    result[0] = STRING_PREFIX;
    for (size_t i = 0; i < text.size(); ++i)
        result[i + 1] = static_cast<uint8_t>(text[i]);
    return result;
}

uint32_t eisa_id_value(std::string_view id) {
    // Three letters of 5 bits each ('A' = 1), then four hex digits; stored big-endian.
    auto letter = [&](size_t i) { return static_cast<uint32_t>(id[i] - 0x40) & 0x1f; };
    auto hex = [&](size_t i) {
        char const c = id[i];
        return static_cast<uint32_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10) & 0xf;
    };
    uint32_t const big_endian = (letter(0) << 26) | (letter(1) << 21) | (letter(2) << 16) | (hex(3) << 12) |
                                (hex(4) << 8) | (hex(5) << 4) | hex(6);
    return __builtin_bswap32(big_endian);
}

Bytes eisa_id(std::string_view id) {
    Bytes result { DWORD_PREFIX };
    append_le(result, eisa_id_value(id), 4);
    return result;
}

Bytes name(std::string_view path, Bytes const& value) {
    Bytes result { NAME_OP };
    append(result, name_string(path));
    append(result, value);
    return result;
}

Bytes scope(std::string_view path, Bytes const& body) {
    Bytes content = name_string(path);
    append(content, body);
    return with_package_length({ SCOPE_OP }, content);
}

Bytes device(std::string_view path, Bytes const& body) {
    Bytes content = name_string(path);
    append(content, body);
    return with_package_length({ EXT_OP_PREFIX, DEVICE_OP }, content);
}

Bytes package(std::vector<Bytes> const& elements) {
    Bytes content { static_cast<uint8_t>(elements.size()) };
    for (auto const& element : elements)
        append(content, element);
    return with_package_length({ PACKAGE_OP }, content);
}

Bytes buffer(Bytes const& content) {
    Bytes body = integer(content.size());
    append(body, content);
    return with_package_length({ BUFFER_OP }, body);
}

Bytes io_port(uint16_t base, uint8_t length) {
    // I/O Port Descriptor (6.4.2.5): 16-bit decode, min = max = base, alignment 1.
    Bytes result { 0x47, 0x01 };
    append_le(result, base, 2);
    append_le(result, base, 2);
    result.push_back(0x01);
    result.push_back(length);
    return result;
}

Bytes irq_no_flags(uint8_t irq) {
    // IRQ Descriptor without flags byte (6.4.2.1): edge-triggered, active-high, exclusive.
    Bytes result { 0x22 };
    append_le(result, uint64_t(1) << irq, 2);
    return result;
}

Bytes memory32_fixed(uint32_t base, uint32_t length, bool writable) {
    // 32-bit Fixed Memory Range Descriptor (6.4.3.4).
    Bytes result { 0x86, 0x09, 0x00, static_cast<uint8_t>(writable ? 1 : 0) };
    append_le(result, base, 4);
    append_le(result, length, 4);
    return result;
}

Bytes extended_interrupt(uint32_t gsi, bool edge_triggered, bool active_low) {
    // Extended Interrupt Descriptor (6.4.3.6): consumer, one interrupt number.
    uint8_t flags = 0x01;
    if (edge_triggered)
        flags |= 0x02;
    if (active_low)
        flags |= 0x04;
    Bytes result { 0x89, 0x06, 0x00, flags, 0x01 };
    append_le(result, gsi, 4);
    return result;
}

Bytes resource_template(std::vector<Bytes> const& descriptors) {
    Bytes content;
    for (auto const& descriptor : descriptors)
        append(content, descriptor);
    // End Tag (6.4.2.9) with checksum 0: "treated as if the checksum operation succeeded".
    content.push_back(0x79);
    content.push_back(0x00);
    return buffer(content);
}

Bytes concat(std::vector<Bytes> const& parts) {
    Bytes result;
    for (auto const& part : parts)
        append(result, part);
    return result;
}

} // namespace kvmm::x86_64::aml

#include "arch/x86_64/acpi/aml.h"

#include <gtest/gtest.h>

namespace kvmm::x86_64::aml {
namespace {

TEST(AmlPackageLength, EncodesBoundariesOfEachForm) {
    EXPECT_EQ(package_length(0), (Bytes { 0x01 }));
    EXPECT_EQ(package_length(61), (Bytes { 0x3e }));
    EXPECT_EQ(package_length(62), (Bytes { 0x3f })); // 62 + 1 = 63, the largest one-byte total
    // 63 content bytes need two length bytes: total 65 = 0x41 -> 0x41 & 0xf = 1, 0x41 >> 4 = 4.
    EXPECT_EQ(package_length(63), (Bytes { 0x41, 0x04 }));
    // 4093 content + 2 = 4095 is the largest two-byte total.
    EXPECT_EQ(package_length(4093), (Bytes { 0x4f, 0xff }));
    // 4094 content needs three bytes: total 4097 = 0x1001.
    EXPECT_EQ(package_length(4094), (Bytes { 0x81, 0x00, 0x01 }));
}

TEST(AmlInteger, UsesSmallestEncoding) {
    EXPECT_EQ(integer(0), (Bytes { 0x00 }));
    EXPECT_EQ(integer(1), (Bytes { 0x01 }));
    EXPECT_EQ(integer(5), (Bytes { 0x0a, 0x05 }));
    EXPECT_EQ(integer(0x3f8), (Bytes { 0x0b, 0xf8, 0x03 }));
    EXPECT_EQ(integer(0xfec00000), (Bytes { 0x0c, 0x00, 0x00, 0xc0, 0xfe }));
    EXPECT_EQ(integer(0x100000000).size(), 9u);
}

TEST(AmlEisaId, CompressesPnp0501) {
    EXPECT_EQ(eisa_id_value("PNP0501"), 0x0105d041u);
    EXPECT_EQ(eisa_id("PNP0501"), (Bytes { 0x0c, 0x41, 0xd0, 0x05, 0x01 }));
}

TEST(AmlNameString, EncodesRootDualAndPaddedNames) {
    EXPECT_EQ(name_string("\\_SB_"), (Bytes { '\\', '_', 'S', 'B', '_' }));
    EXPECT_EQ(name_string("COM"), (Bytes { 'C', 'O', 'M', '_' }));
    EXPECT_EQ(name_string("_SB_.COM1"), (Bytes { 0x2e, '_', 'S', 'B', '_', 'C', 'O', 'M', '1' }));
}

TEST(AmlResourceTemplate, IoAndIrqDescriptorsEndWithEndTag) {
    auto const buffer_bytes = resource_template({ io_port(0x3f8, 8), irq_no_flags(4) });
    // BufferOp, PkgLength, BufferSize (byte 13), 8 bytes IO, 3 bytes IRQ, 2 bytes end tag.
    Bytes const expected { 0x11, 0x10, 0x0a, 0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8,
                           0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00 };
    EXPECT_EQ(buffer_bytes, expected);
}

} // namespace
} // namespace kvmm::x86_64::aml

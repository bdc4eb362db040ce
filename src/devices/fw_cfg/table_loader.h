// TableLoader: builds the "etc/table-loader" script of QEMU's BIOS linker/loader interface
// (QEMU hw/acpi/bios-linker-loader.c; SeaBIOS src/fw/romfile_loader.c, OVMF's
// QemuFwCfgAcpiPlatformDxe), which tells firmware how to install ACPI tables handed over as
// fw_cfg files: allocate each file in guest memory, add the address where one file landed to
// pointer fields in another, then fix up checksums. The VMM cannot place the tables itself
// because only the firmware knows which memory it leaves to the operating system.
//
// The script is a sequence of 128-byte little-endian commands:
//   ALLOCATE     (1): file name[56], alignment u32, zone u8 (1 = high memory, 2 = F segment)
//   ADD_POINTER  (2): destination file[56], source file[56], offset u32, size u8 - adds the
//                     source file's address to the size-byte integer at `offset` in the
//                     destination file;
//   ADD_CHECKSUM (3): file[56], offset u32, start u32, length u32 - subtracts the byte sum of
//                     [start, start+length) from the byte at `offset`, making the sum zero.
// Files must be allocated before a command refers to them; each command checks its ranges.
//
// Threading: a value type, built on the builder thread.
#pragma once

#include "base/expected.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvmm {

class TableLoader {
public:
    enum class Zone : uint8_t { High = 1, FSegment = 2 };
    static constexpr size_t COMMAND_SIZE = 128;
    static constexpr uint32_t COMMAND_ALLOCATE = 1;
    static constexpr uint32_t COMMAND_ADD_POINTER = 2;
    static constexpr uint32_t COMMAND_ADD_CHECKSUM = 3;

    // `size` is the file's length, against which later commands' ranges are checked.
    Expected<void> allocate(std::string const& file, uint64_t size, uint32_t alignment, Zone zone);
    Expected<void> add_pointer(std::string const& destination, std::string const& source, uint32_t offset,
                               uint8_t size);
    Expected<void> add_checksum(std::string const& file, uint32_t offset, uint32_t start, uint32_t length);

    std::vector<uint8_t> const& script() const { return m_script; }

private:
    struct Allocated {
        std::string name;
        uint64_t size;
    };
    Expected<uint64_t> size_of(std::string const& file) const;
    uint8_t* begin_command(uint32_t command);

    std::vector<Allocated> m_files;
    std::vector<uint8_t> m_script;
};

} // namespace kvmm

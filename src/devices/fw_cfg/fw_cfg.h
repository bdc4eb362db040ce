// FwCfg: QEMU's firmware configuration interface (QEMU docs/specs/fw_cfg.rst), the channel
// through which QEMU-built firmware (SeaBIOS, OVMF) learns the machine: its memory map, CPU
// count, boot order, ACPI tables and, optionally, a kernel to boot.
//
// The guest sees, on x86 I/O ports:
//   0x510 (16-bit write)  selector: picks an item and rewinds it to offset 0;
//   0x511 (8-bit read)    data: the selected item's next byte (0 past its end);
//   0x514..0x51b          DMA address, 64-bit big-endian, written as two 32-bit halves (high
//                         at 0x514, low at 0x518); the low write starts the transfer. Reads
//                         give the signature "QEMU CFG".
// A DMA transfer reads a FWCfgDmaAccess {be32 control, be32 length, be64 address} from guest
// memory; control selects (bits 16-31 = key with SELECT), then reads, skips or writes
// `length` bytes of the item at the current offset. When done, control is written back as 0,
// or with only the ERROR bit set when the guest's request could not be carried out (an
// address outside guest RAM, a write to a read-only item): a bad request never stops kvmm.
//
// Items are numbered: fixed keys below 0x20 (signature, ID, CPU counts, ...), files from
// 0x20 up, listed in the file directory (key 0x19) sorted by name, as QEMU lists them.
//
// Threading: items are added on the builder thread before any vCPU runs and never change
// after; read() and write() come from vCPU threads, and the selection, offset and DMA address
// latch they share are guarded by m_lock (a DMA transfer runs on the vCPU that started it).
#pragma once

#include "base/expected.h"
#include "base/state_io.h"
#include "base/thread_annotations.h"
#include "devices/bus/bus_device.h"
#include "memory/guest_memory.h"

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvmm {

// The selector keys QEMU and its firmware agree on (QEMU include/standard-headers and
// fw_cfg.rst "Selector Register"); integers in items are little-endian unless noted.
namespace fw_cfg {
inline constexpr uint16_t PORT_BASE = 0x510;
inline constexpr uint16_t PORT_LENGTH = 12; // selector, data, two pad bytes, DMA address
inline constexpr uint64_t SELECTOR_OFFSET = 0;
inline constexpr uint64_t DATA_OFFSET = 1;
inline constexpr uint64_t DMA_OFFSET = 4;

inline constexpr uint16_t SIGNATURE = 0x00;
inline constexpr uint16_t ID = 0x01;
inline constexpr uint16_t UUID = 0x02;
inline constexpr uint16_t RAM_SIZE = 0x03;
inline constexpr uint16_t NOGRAPHIC = 0x04;
inline constexpr uint16_t NB_CPUS = 0x05;
inline constexpr uint16_t KERNEL_ADDR = 0x07;
inline constexpr uint16_t KERNEL_SIZE = 0x08;
inline constexpr uint16_t KERNEL_CMDLINE = 0x09;
inline constexpr uint16_t INITRD_ADDR = 0x0a;
inline constexpr uint16_t INITRD_SIZE = 0x0b;
inline constexpr uint16_t BOOT_DEVICE = 0x0c;
inline constexpr uint16_t NUMA = 0x0d;
inline constexpr uint16_t BOOT_MENU = 0x0e;
inline constexpr uint16_t MAX_CPUS = 0x0f;
inline constexpr uint16_t KERNEL_ENTRY = 0x10;
inline constexpr uint16_t KERNEL_DATA = 0x11;
inline constexpr uint16_t INITRD_DATA = 0x12;
inline constexpr uint16_t CMDLINE_ADDR = 0x13;
inline constexpr uint16_t CMDLINE_SIZE = 0x14;
inline constexpr uint16_t CMDLINE_DATA = 0x15;
inline constexpr uint16_t SETUP_ADDR = 0x16;
inline constexpr uint16_t SETUP_SIZE = 0x17;
inline constexpr uint16_t SETUP_DATA = 0x18;
inline constexpr uint16_t FILE_DIR = 0x19;
inline constexpr uint16_t FILE_FIRST = 0x20;
inline constexpr uint16_t FILE_LAST = 0x3fff;
// Selector bits above the key: a write request (legacy, ignored) and the architecture bit.
inline constexpr uint16_t SELECTOR_WRITE = 0x4000;
inline constexpr uint16_t SELECTOR_ARCH = 0x8000;
inline constexpr uint16_t KEY_MASK = 0x3fff;
inline constexpr uint16_t ARCH_E820_TABLE = 0x8003;

// ID bits: the traditional port interface and the DMA interface.
inline constexpr uint32_t ID_TRADITIONAL = 1u << 0;
inline constexpr uint32_t ID_DMA = 1u << 1;

// FWCfgDmaAccess control bits.
inline constexpr uint32_t DMA_ERROR = 0x01;
inline constexpr uint32_t DMA_READ = 0x02;
inline constexpr uint32_t DMA_SKIP = 0x04;
inline constexpr uint32_t DMA_SELECT = 0x08;
inline constexpr uint32_t DMA_WRITE = 0x10;
inline constexpr size_t DMA_ACCESS_SIZE = 16;
// "QEMU CFG" as a big-endian 64-bit value: what reads of the DMA address register return.
inline constexpr uint64_t DMA_SIGNATURE = 0x51454d5520434647ull;

// A file name in the directory holds at most 55 characters and its terminating NUL.
inline constexpr size_t FILE_NAME_SIZE = 56;
inline constexpr size_t FILE_DIR_ENTRY_SIZE = 64;
} // namespace fw_cfg

// What a snapshot keeps of the interface: the selection, the position in it, and a DMA address
// high half written but not yet followed by the low half. The items are the machine's
// configuration, rebuilt by the builder.
struct FwCfgState {
    static constexpr std::string_view SECTION = "fw-cfg";
    static constexpr uint32_t VERSION = 1;

    uint16_t selector { 0 };
    uint32_t offset { 0 };
    uint32_t dma_address_high { 0 };

    bool operator==(FwCfgState const&) const = default;
    void encode(StateWriter& writer) const;
    static Expected<FwCfgState> decode(StateReader& reader);
};

class FwCfg final : public BusDevice {
public:
    // With the signature and the ID items (traditional and DMA interfaces) and an empty file
    // directory. `memory` must outlive the device.
    explicit FwCfg(GuestMemory const& memory);

    // Builder thread, before the guest runs. A fixed item, replacing one of the same key;
    // keys from FILE_DIR up belong to the directory and are refused.
    Expected<void> add_item(uint16_t key, std::vector<uint8_t> data);
    // A file, given the next free key; refused when the name is empty, longer than 55
    // characters, already present, or no key is left.
    Expected<uint16_t> add_file(std::string name, std::vector<uint8_t> data);
    // Item convenience: a little-endian integer of the given width.
    Expected<void> add_u16(uint16_t key, uint16_t value);
    Expected<void> add_u32(uint16_t key, uint32_t value);
    Expected<void> add_u64(uint16_t key, uint64_t value);

    // The bytes of an item (tests and the builder's checks); empty when the key has none.
    std::vector<uint8_t> item(uint16_t key) const;

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<uint8_t const> data) override;

    FwCfgState save() const;
    Expected<void> restore(FwCfgState const& state);

private:
    struct File {
        std::string name;
        uint16_t key;
    };
    void rebuild_directory();
    // The item the selection names, or null (an unknown key reads as empty).
    std::vector<uint8_t> const* selected_item() const REQUIRES(m_lock);
    void select(uint16_t selector) REQUIRES(m_lock);
    // Runs the FWCfgDmaAccess at guest address `access_address`.
    void run_dma(uint64_t access_address) REQUIRES(m_lock);
    // One READ/SKIP/WRITE of `length` bytes at `address`; false when the guest's request fails.
    bool transfer(uint32_t control, uint32_t length, uint64_t address) REQUIRES(m_lock);

    GuestMemory const& m_memory;
    // Immutable once the guest runs (builder thread before that).
    std::map<uint16_t, std::vector<uint8_t>> m_items;
    std::vector<File> m_files;
    uint16_t m_next_file_key { fw_cfg::FILE_FIRST };

    mutable Mutex m_lock;
    uint16_t m_selector GUARDED_BY(m_lock) { 0 };
    uint32_t m_offset GUARDED_BY(m_lock) { 0 };
    uint32_t m_dma_address_high GUARDED_BY(m_lock) { 0 };
};

} // namespace kvmm

// libFuzzer target: a hostile qcow2 image. The input is the image file (its backing file name is
// cleared: a fuzzer must not open host files by name); it is opened read-write as qcow2 and,
// when the header and tables pass, read, written, zeroed, discarded and flushed at offsets the
// input's last bytes choose. A corrupt image must be refused or fail requests with an error:
// no crash, no hang, no unbounded allocation.
//
// The image is a memfd reopened through /proc/self/fd, so no file is left behind.
#include "backends/disk/disk_image.h"
#include "backends/disk/qcow2_image.h"

#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    if (size < 112 || size > (4u << 20))
        return 0;
    std::vector<uint8_t> bytes(data, data + size);
    std::memset(bytes.data() + 8, 0, 12); // backing_file_offset and backing_file_size
    int const fd = ::memfd_create("qcow2-fuzz", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
        ::close(fd);
        return 0;
    }
    std::string const path = "/proc/self/fd/" + std::to_string(fd);
    uint64_t selector = 0;
    std::memcpy(&selector, data + size - 8, 8);
    {
        auto image = kvmm::DiskImage::open(path, false, kvmm::DiskFormat::Qcow2);
        if (image) {
            auto& layer = *image->qcow2();
            uint64_t const virtual_size = layer.virtual_size();
            std::vector<std::byte> buffer(8192);
            iovec const io { buffer.data(), buffer.size() };
            for (uint64_t offset : { uint64_t { 0 }, virtual_size / 2, virtual_size > 8192 ? virtual_size - 8192 : 0,
                                     virtual_size > 0 ? selector % virtual_size : 0 }) {
                (void)layer.read(offset, std::span(&io, 1));
                if (virtual_size >= 8192 && offset <= virtual_size - 8192)
                    (void)layer.write(offset, std::span(&io, 1));
            }
            uint64_t const start = virtual_size > 0 ? (selector >> 8) % virtual_size : 0;
            uint64_t const length = std::min<uint64_t>(virtual_size - start, 1u << 20);
            (void)layer.write_zeroes(start, length);
            (void)layer.discard(start / 2, length);
            (void)layer.read(start, std::span(&io, 1));
            (void)layer.flush();
        }
    }
    ::close(fd);
    return 0;
}

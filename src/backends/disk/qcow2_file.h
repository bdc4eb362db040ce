// Creating a qcow2 v3 image file and reading the header of one, without opening it for I/O:
// what an image tool needs (kvmmd's volume verbs, tests, benchmarks), apart from the
// translation layer (qcow2_image.h), so that a program that must not link the block layer
// (kvmmd; tools/check_layers.py) can still make and describe images.
//
// The images written are what `qemu-img create -f qcow2 -o compat=1.1,lazy_refcounts=off`
// writes in substance: version 3, 16-bit refcounts, zlib compression type, one refcount
// table cluster, one refcount block, the L1 table; with a backing file, its name and the
// backing format extension (qcow2.txt, "Header extensions", 0xe2792aca), so neither kvmm nor
// qemu-img ever has to probe the backing file's format.
//
// Threading: free functions, no shared state.
#pragma once

#include "backends/disk/qcow2_format.h"
#include "base/expected.h"

#include <cstdint>
#include <optional>
#include <string>

namespace kvmm::qcow2 {

struct CreateOptions {
    uint32_t cluster_bits { 16 };
    // Stored as given: a relative name is resolved against the image's directory when opened.
    std::optional<std::string> backing_file;
    BackingFormat backing_format { BackingFormat::Raw };
};

// Writes a new, empty image of `size` bytes at `path`, which must not exist (O_EXCL), and
// fdatasyncs it. A failure part-way removes the file.
Expected<void> create_image(std::string const& path, uint64_t size, CreateOptions const& options);

// What the header of an image file says, and how much of the host file system it takes.
struct FileInfo {
    Header header;
    uint64_t file_size { 0 };       // st_size
    uint64_t allocated_bytes { 0 }; // st_blocks * 512
};

// Reads and checks (parse_header) the header of the qcow2 file at `path`. Errors name the path
// and the field.
Expected<FileInfo> read_file_info(std::string const& path);

// Whether the file at `path` starts with the qcow2 magic (for describing files, never for
// choosing how to open a guest-writable image). False when it cannot be read.
bool has_qcow2_magic(std::string const& path);

} // namespace kvmm::qcow2

#!/usr/bin/env python3
"""Extract the uncompressed vmlinux ELF from an x86 bzImage.

Usage: extract-vmlinux.py BZIMAGE OUTPUT

The protected-mode payload is located with the setup header fields defined by the
Linux x86 boot protocol (Documentation/arch/x86/boot.rst, protocol >= 2.08):
  setup_sects     (offset 0x1f1) - number of 512-byte setup sectors (0 means 4)
  header magic    (offset 0x202) - "HdrS"
  version         (offset 0x206)
  payload_offset  (offset 0x248) - payload start, relative to the protected-mode code
  payload_length  (offset 0x24c)
The kernel build appends the uncompressed size as a 4-byte little-endian value to the
compressed stream (scripts/Makefile.lib, size_append), which is used here to check the
result. The compression format is recognised by its magic bytes; only tools shipped as
Debian packages are used to decompress (lz4, gzip, xz, zstd).
"""

import struct
import subprocess
import sys

SETUP_SECTS_OFFSET = 0x1F1
HEADER_MAGIC_OFFSET = 0x202
HEADER_MAGIC = b"HdrS"
VERSION_OFFSET = 0x206
PAYLOAD_OFFSET_OFFSET = 0x248
MIN_PROTOCOL_WITH_PAYLOAD = 0x0208
SECTOR_SIZE = 512
ELF_MAGIC = b"\x7fELF"

# Magic bytes -> decompressor command reading stdin and writing stdout.
DECOMPRESSORS = [
    (b"\x02\x21\x4c\x18", ["lz4", "-dc"]),  # LZ4 legacy frame (kernel's lz4 -l)
    (b"\x1f\x8b", ["gzip", "-dc"]),
    (b"\xfd7zXZ\x00", ["xz", "-dc"]),
    (b"\x28\xb5\x2f\xfd", ["zstd", "-dcq"]),
]


def fail(message):
    sys.stderr.write(f"extract-vmlinux: {message}\n")
    sys.exit(1)


def main(argv):
    if len(argv) != 3:
        fail("usage: extract-vmlinux.py BZIMAGE OUTPUT")
    image_path, output_path = argv[1], argv[2]
    with open(image_path, "rb") as image_file:
        image = image_file.read()

    if image[HEADER_MAGIC_OFFSET:HEADER_MAGIC_OFFSET + 4] != HEADER_MAGIC:
        fail(f"{image_path}: no 'HdrS' setup header at 0x{HEADER_MAGIC_OFFSET:x}")
    (version,) = struct.unpack_from("<H", image, VERSION_OFFSET)
    if version < MIN_PROTOCOL_WITH_PAYLOAD:
        fail(f"{image_path}: boot protocol 0x{version:04x} has no payload fields (< 2.08)")

    setup_sects = image[SETUP_SECTS_OFFSET] or 4
    protected_mode_start = (setup_sects + 1) * SECTOR_SIZE
    payload_offset, payload_length = struct.unpack_from("<II", image, PAYLOAD_OFFSET_OFFSET)
    start = protected_mode_start + payload_offset
    end = start + payload_length
    if payload_length < 4 or end > len(image):
        fail(f"{image_path}: payload [{start:#x}, {end:#x}) outside the {len(image)}-byte file")
    payload = image[start:end]

    # The last 4 bytes are the uncompressed size, not part of the compressed stream.
    compressed = payload[:-4]
    (expected_size,) = struct.unpack("<I", payload[-4:])

    for magic, command in DECOMPRESSORS:
        if compressed.startswith(magic):
            break
    else:
        fail(f"{image_path}: unknown payload compression, magic {compressed[:6].hex()}")

    result = subprocess.run(command, input=compressed, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, check=False)
    vmlinux = result.stdout
    if result.returncode != 0:
        fail(f"{' '.join(command)} failed ({result.returncode}): "
             f"{result.stderr.decode(errors='replace').strip()}")
    if len(vmlinux) != expected_size:
        fail(f"decompressed {len(vmlinux)} bytes, the image says {expected_size}")
    if not vmlinux.startswith(ELF_MAGIC):
        fail("decompressed payload is not an ELF file")

    with open(output_path, "wb") as output_file:
        output_file.write(vmlinux)


if __name__ == "__main__":
    main(sys.argv)

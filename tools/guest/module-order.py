#!/usr/bin/env python3
"""Print the kernel modules to load, dependencies first, for the named modules.

Usage: module-order.py MODULE_DIR MODULE...

MODULE_DIR is an extracted lib/modules/<version> tree (from the kernel's .deb). Each
output line is a path relative to MODULE_DIR, in an order in which `insmod` succeeds:
every module comes after the modules it depends on. Modules built into the kernel
(listed in modules.builtin) are skipped. Dependencies are read from the "depends="
entry of each module's .modinfo ELF section, which is what depmod itself uses, so
the host needs no kmod tools and no depmod run. Soft dependencies ("softdep=") are
optional by definition and are not followed.
"""

import os
import struct
import sys


def fail(message):
    sys.stderr.write(f"module-order: {message}\n")
    sys.exit(1)


def canonical(name):
    # Module names treat '-' and '_' as the same character (kernel/params.c).
    return name.replace("-", "_")


def module_name(path):
    base = os.path.basename(path)
    return canonical(base[:-len(".ko")] if base.endswith(".ko") else base)


def read_modinfo(path):
    """Return the key=value strings of the .modinfo section of an ELF64 module."""
    with open(path, "rb") as module_file:
        data = module_file.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        fail(f"{path}: not a little-endian ELF64 module")
    # ELF64 header: e_shoff at 0x28, e_shentsize/e_shnum/e_shstrndx at 0x3a.
    (section_table,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)

    def section(index):
        # Elf64_Shdr: sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, ...
        name, _, _, _, offset, size = struct.unpack_from(
            "<IIQQQQ", data, section_table + index * entry_size)
        return name, offset, size

    _, names_offset, _ = section(names_index)
    for index in range(count):
        name, offset, size = section(index)
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name:end] == b".modinfo":
            return [entry.decode(errors="replace")
                    for entry in data[offset:offset + size].split(b"\0") if entry]
    return []


def main(argv):
    if len(argv) < 3:
        fail("usage: module-order.py MODULE_DIR MODULE...")
    module_dir, wanted = argv[1], argv[2:]

    paths = {}
    for root, _, files in os.walk(module_dir):
        for file_name in files:
            if file_name.endswith(".ko"):
                full = os.path.join(root, file_name)
                paths[module_name(full)] = os.path.relpath(full, module_dir)

    builtin = set()
    builtin_list = os.path.join(module_dir, "modules.builtin")
    if os.path.exists(builtin_list):
        with open(builtin_list, encoding="utf-8") as builtin_file:
            builtin = {module_name(line.strip()) for line in builtin_file if line.strip()}

    order = []
    state = {}  # name -> "visiting" | "done"

    def visit(name, wanted_by):
        name = canonical(name)
        if state.get(name) == "done" or name in builtin:
            return
        if state.get(name) == "visiting":
            fail(f"dependency cycle through module '{name}'")
        if name not in paths:
            fail(f"module '{name}' (needed by {wanted_by}) is neither built in nor in {module_dir}")
        state[name] = "visiting"
        for entry in read_modinfo(os.path.join(module_dir, paths[name])):
            if entry.startswith("depends="):
                for dependency in filter(None, entry[len("depends="):].split(",")):
                    visit(dependency, name)
        state[name] = "done"
        order.append(paths[name])

    for name in wanted:
        visit(name, "the command line")
    for path in order:
        print(path)


if __name__ == "__main__":
    main(sys.argv)

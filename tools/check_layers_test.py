#!/usr/bin/env python3
"""Tests of tools/check_layers.py on small fake source trees (python3 -m unittest, or run it)."""

import io
import os
import sys
import tempfile
import textwrap
import unittest
from contextlib import redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_layers  # noqa: E402  (the path is set up just above)

# A three-layer table for the fake trees: base <- memory <- devices (devices also uses base).
FAKE_LAYERS = {"base": [], "memory": ["base"], "hypervisor": ["base", "memory"],
               "devices": ["base", "memory"], "cli": ["base", "memory", "hypervisor", "devices"]}
FAKE_LIBRARIES = {
    "kvmm_base": check_layers.Rule("base"),
    "kvmm_memory": check_layers.Rule("memory"),
    "kvmm_hypervisor_kvm": check_layers.Rule("hypervisor"),
    "kvmm_devices": check_layers.Rule("devices"),
}


class FakeTree:
    """A temporary source tree: write(path, text) files, then check() it."""

    def __init__(self):
        self.directory = tempfile.TemporaryDirectory()
        self.root = self.directory.name
        self.write("src/base/CMakeLists.txt", "kvmm_library(kvmm_base SOURCES file.cc DEPS fmt::fmt)\n")
        self.write("src/base/file.h", "#pragma once\n#include <string>\n")
        self.write("src/base/file.cc", '#include "base/file.h"\n')
        self.write("src/memory/CMakeLists.txt",
                   "kvmm_library(kvmm_memory SOURCES guest_memory.cc DEPS kvmm_base)\n"
                   "kvmm_test(memory_test SOURCES guest_memory_test.cc DEPS kvmm_memory)\n")
        self.write("src/memory/guest_memory.h", '#pragma once\n#include "base/file.h"\n')
        self.write("src/memory/guest_memory.cc", '#include "memory/guest_memory.h"\n')
        self.write("src/memory/guest_memory_test.cc", '#include "memory/guest_memory.h"\n#include "base/file.h"\n')
        self.write("src/hypervisor/CMakeLists.txt",
                   "kvmm_library(kvmm_hypervisor_kvm SOURCES kvm/kvm_vm.cc DEPS kvmm_memory kvmm_base)\n")
        self.write("src/hypervisor/kvm/kvm_vm.h", "#pragma once\n#include <linux/kvm.h>\n")
        self.write("src/hypervisor/kvm/kvm_vm.cc", '#include "hypervisor/kvm/kvm_vm.h"\n#include "memory/guest_memory.h"\n')
        self.write("src/devices/CMakeLists.txt",
                   "# the legacy devices\nkvmm_library(kvmm_devices\n  SOURCES legacy/uart.cc\n"
                   "  DEPS kvmm_memory kvmm_base)\n")
        self.write("src/devices/legacy/uart.h", '#pragma once\n#include "memory/guest_memory.h"\n')
        self.write("src/devices/legacy/uart.cc", '#include "devices/legacy/uart.h"\n#include "base/file.h"\n')

    def write(self, path, text):
        full = os.path.join(self.root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as stream:
            stream.write(text)

    def append(self, path, text):
        with open(os.path.join(self.root, path), "a", encoding="utf-8") as stream:
            stream.write(text)

    def check(self):
        """Returns (exit status, output) of the check on this tree."""
        output = io.StringIO()
        argv = sys.argv
        sys.argv = ["check_layers.py", "--root", self.root]
        try:
            with redirect_stdout(output):
                status = check_layers.main()
        finally:
            sys.argv = argv
        return status, output.getvalue()


class CheckLayersTest(unittest.TestCase):
    def setUp(self):
        self.saved = (check_layers.LAYERS, check_layers.LIBRARIES, check_layers.KNOWN_EXCEPTIONS,
                      check_layers.NEVER_LINKED)
        check_layers.LAYERS = FAKE_LAYERS
        check_layers.LIBRARIES = FAKE_LIBRARIES
        check_layers.KNOWN_EXCEPTIONS = {}
        check_layers.NEVER_LINKED = {}
        self.tree = FakeTree()

    def tearDown(self):
        (check_layers.LAYERS, check_layers.LIBRARIES, check_layers.KNOWN_EXCEPTIONS,
         check_layers.NEVER_LINKED) = self.saved
        self.tree.directory.cleanup()

    def test_tree_that_follows_the_layers_passes(self):
        status, output = self.tree.check()
        self.assertEqual(status, 0, output)
        self.assertIn("follow the layers", output)

    def test_include_against_the_layers_fails_naming_file_line_header_and_rule(self):
        self.tree.append("src/memory/guest_memory.cc", '#include "devices/legacy/uart.h"\n')
        status, output = self.tree.check()
        self.assertEqual(status, 1)
        self.assertIn('error: src/memory/guest_memory.cc:2: includes "devices/legacy/uart.h" (kvmm_devices): '
                      "rule: kvmm_memory (layer 'memory') may not use kvmm_devices (layer 'devices')", output)

    def test_include_of_an_undeclared_library_fails(self):
        self.tree.write("src/devices/CMakeLists.txt", "kvmm_library(kvmm_devices SOURCES legacy/uart.cc DEPS kvmm_memory)\n")
        status, output = self.tree.check()
        self.assertEqual(status, 1)
        self.assertIn('error: src/devices/legacy/uart.cc:2: includes "base/file.h" (kvmm_base): rule: kvmm_devices '
                      "does not declare it in its DEPS (src/devices/CMakeLists.txt)", output)

    def test_test_may_include_what_it_links_transitively(self):
        status, output = self.tree.check()  # memory_test links kvmm_memory only and includes base/file.h
        self.assertEqual(status, 0, output)

    def test_linux_kvm_header_outside_hypervisor_kvm_fails(self):
        self.tree.append("src/devices/legacy/uart.cc", "#include <linux/kvm.h>\n")
        status, output = self.tree.check()
        self.assertEqual(status, 1)
        self.assertIn("error: src/devices/legacy/uart.cc:3: includes <linux/kvm.h>: rule: only src/hypervisor/kvm "
                      "includes <linux/kvm.h>", output)

    def test_devices_including_hypervisor_kvm_fails(self):
        self.tree.append("src/devices/legacy/uart.h", '#include "hypervisor/kvm/kvm_vm.h"\n')
        status, output = self.tree.check()
        self.assertEqual(status, 1)
        self.assertIn('error: src/devices/legacy/uart.h:3: includes "hypervisor/kvm/kvm_vm.h": rule: devices never '
                      "use hypervisor/kvm", output)

    def test_declared_dependency_against_the_layers_fails(self):
        self.tree.write("src/base/CMakeLists.txt", "kvmm_library(kvmm_base SOURCES file.cc DEPS kvmm_devices)\n")
        status, output = self.tree.check()
        self.assertEqual(status, 1)
        self.assertIn("error: src/base/CMakeLists.txt: kvmm_base declares kvmm_devices: rule: layer 'base' may not "
                      "use layer 'devices'", output)

    def test_library_missing_from_the_table_fails(self):
        self.tree.append("src/devices/CMakeLists.txt", "kvmm_library(kvmm_extra SOURCES extra.cc DEPS kvmm_base)\n")
        self.tree.write("src/devices/extra.cc", '#include "base/file.h"\n')
        status, output = self.tree.check()
        self.assertEqual(status, 1)
        self.assertIn("library kvmm_extra is not in tools/check_layers.py's LIBRARIES table", output)

    def test_known_exception_is_reported_but_does_not_fail(self):
        self.tree.append("src/memory/guest_memory.cc", '#include "devices/legacy/uart.h"\n')
        check_layers.KNOWN_EXCEPTIONS = {("src/memory/guest_memory.cc", "devices/legacy/uart.h"): "tracked"}
        status, output = self.tree.check()
        self.assertEqual(status, 0, output)
        self.assertIn("known: src/memory/guest_memory.cc:2", output)


if __name__ == "__main__":
    unittest.main()

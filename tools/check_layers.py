#!/usr/bin/env python3
"""Checks that kvmm's #include directives follow the layer diagram.

The layers (docs/ARCHITECTURE.md, "Layers"; the design notes' "Layers" and "Next shape"):

    base <- memory <- { hypervisor, arch, devices, backends } <- vmm <- { api, manager } <- cli

LIBRARIES below is the one table of what each CMake library may use. The check reads the
libraries, tests and programs that the CMakeLists.txt files under src/, tests/, fuzz/ and bench/
declare (kvmm_library, kvmm_test, kvmm_fuzzer, add_executable, target_link_libraries), gives
every source and header under src/ an owning target, and then fails on:

  * a CMake library that the table does not know, or a table entry that no CMakeLists declares;
  * a library that declares (DEPS) a library the table does not allow it;
  * an #include "..." of another library's header that the table does not allow;
  * an #include "..." of another library's header that the including target does not link: a
    library must name it in its own DEPS (its header must not rely on a dependency's
    dependencies), a test or program must link it directly or through its libraries;
  * <linux/kvm.h> outside src/hypervisor/kvm, and hypervisor/kvm headers included from devices;
  * test-support code (testing/ folders, the fake hypervisor) used by a non-test library;
  * a program whose link closure reaches a library it must never link (kvmmctl and the manager
    never link the VMM or the devices).

Each finding names the file, the line, the included header and the rule. KNOWN_EXCEPTIONS lists
the violations that are tracked elsewhere; they are reported, not failed on.

Usage: tools/check_layers.py [--root DIR]   (exit status 0 clean, 1 violations, 2 bad input)
Python 3 standard library only.
"""

import argparse
import os
import re
import sys
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------
# The table. Layer order: a library may use the layers listed for its own layer, plus the
# libraries named in its entry (edges inside one layer).
LAYERS = {
    "base": [],
    # The typed machine configuration and its one validate() (design notes, "Next shape").
    "config": ["base"],
    "memory": ["base"],
    # The seccomp filters (docs/security.md); only the programs install them.
    "sandbox": ["base"],
    "hypervisor": ["base", "memory"],
    "arch": ["base", "memory"],
    "backends": ["base", "memory", "config"],
    "devices": ["base", "memory", "backends"],
    "vmm": ["base", "config", "memory", "hypervisor", "arch", "backends", "devices"],
    # api uses the configuration and the backends' host checks, never the machine.
    "api": ["base", "config", "memory", "backends"],
    # manager and kvmmctl never link the VMM or the devices (design notes, "Next shape").
    "manager": ["base", "config"],
    # kvmm-jailer's library: sets up a jail and execs kvmm; it never links kvmm's code.
    "jailer": ["base"],
    # The programs and VmmControl, the library that connects kvmm's API to its machine.
    "cli": ["base", "config", "memory", "hypervisor", "arch", "backends", "devices", "vmm", "api", "manager", "jailer", "sandbox", "cli"],
}


@dataclass
class Rule:
    layer: str
    uses: list = field(default_factory=list)  # libraries of the same (or another) layer
    testing: bool = False  # test support: only tests, fuzzers, benchmarks and testing libraries


VIRTIO_DEVICE = Rule("devices", ["kvmm_virtio", "kvmm_devices"])
LIBRARIES = {
    "kvmm_base": Rule("base"),
    # fmt's and spdlog's out-of-line code for the statically linked kvmm (cmake/kvmm.cmake).
    "kvmm_logging_static": Rule("base"),
    "kvmm_config": Rule("config"),
    "kvmm_memory": Rule("memory"),
    "kvmm_sandbox": Rule("sandbox"),
    # The hypervisor interfaces (vm.h, vcpu.h) and the hypervisor-neutral x86 state; boot-state
    # writers (arch) fill that state, so arch may use it.
    "kvmm_hypervisor_state": Rule("hypervisor"),
    "kvmm_hypervisor_kvm": Rule("hypervisor", ["kvmm_hypervisor_state"]),
    "kvmm_hypervisor_fake": Rule("hypervisor", ["kvmm_hypervisor_state"], testing=True),
    "kvmm_arch": Rule("arch", ["kvmm_hypervisor_state"]),
    "kvmm_acpi": Rule("arch", ["kvmm_arch"]),  # the DSDT places devices by the memory layout
    # The qcow2 format and image files without the block layer (kvmmd's volume verbs use it).
    "kvmm_disk_format": Rule("backends"),
    "kvmm_disk": Rule("backends", ["kvmm_disk_format"]),
    # The write-recording format and writer (virtio-blk record=PATH) and the crash-state
    # checker built on its reader (kvmm-crash-check).
    "kvmm_write_log": Rule("backends"),
    "kvmm_crash_states": Rule("backends", ["kvmm_write_log"]),
    "kvmm_net_backend": Rule("backends"),
    "kvmm_net_testing": Rule("backends", ["kvmm_net_backend"], testing=True),
    "kvmm_devices": Rule("devices"),
    "kvmm_virtio": Rule("devices", ["kvmm_devices"]),
    "kvmm_fw_cfg": Rule("devices", ["kvmm_devices"]),
    "kvmm_virtio_testing": Rule("devices", ["kvmm_virtio", "kvmm_devices"], testing=True),
    "kvmm_virtio_rng": VIRTIO_DEVICE,
    "kvmm_virtio_console": VIRTIO_DEVICE,
    "kvmm_virtio_block": VIRTIO_DEVICE,
    "kvmm_virtio_net": VIRTIO_DEVICE,
    "kvmm_virtio_vsock": VIRTIO_DEVICE,
    "kvmm_virtio_balloon": VIRTIO_DEVICE,
    "kvmm_vmm": Rule("vmm"),
    "kvmm_api": Rule("api"),
    # VmmControl, the API's controller of the machine: a library of the programs' layer so its
    # unit test can link it.
    "kvmm_vmm_control": Rule("cli"),
    "kvmm_manager_protocol": Rule("manager"),
    "kvmm_manager": Rule("manager", ["kvmm_manager_protocol"]),
    # Volumes (kvmmctl's vol verbs, clone) create and describe images with the qcow2 file code
    # alone, never the block layer.
    "kvmm_manager_volumes": Rule("manager", ["kvmm_config", "kvmm_manager", "kvmm_manager_protocol", "kvmm_disk_format"]),
    "kvmm_manager_daemon": Rule("manager", ["kvmm_manager", "kvmm_manager_protocol", "kvmm_manager_volumes",
                                            "kvmm_disk_format"]),
    "kvmm_jailer": Rule("jailer"),
}
# Programs are in the cli layer; these must not reach the named libraries even indirectly.
NEVER_LINKED = {
    "kvmmctl": ["kvmm_vmm", "kvmm_devices", "kvmm_virtio", "kvmm_hypervisor_kvm"],
    "kvmmd": ["kvmm_vmm", "kvmm_devices", "kvmm_virtio", "kvmm_hypervisor_kvm"],
    "kvmm-jailer": ["kvmm_vmm", "kvmm_devices", "kvmm_virtio", "kvmm_hypervisor_kvm", "kvmm_api"],
}
# Test support that any test may use besides what its subject library may use.
TEST_SUPPORT_PREFIXES = ("base/testing/",)

# Violations tracked by an open issue: (including file or target, included header or library).
# Reported as "known"; an entry that no longer matches anything is reported as stale.
KNOWN_EXCEPTIONS = {
    # One-line forwarders left at the old paths of the configuration headers, so that code not
    # yet moved keeps compiling; kvmm_vmm declares kvmm_config, and the forwarders go with them.
}

SOURCE_SUFFIXES = (".h", ".cc", ".c", ".S")
SCANNED_TREES = ("src", "tests", "fuzz", "bench")


# ---------------------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    kind: str  # library, test, fuzzer, program
    cmake_file: str
    sources: list = field(default_factory=list)  # paths relative to the root
    deps: list = field(default_factory=list)


def strip_cmake_comments(text):
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def cmake_calls(text):
    """Yields (command, [arguments]) for each call; arguments split on whitespace."""
    text = strip_cmake_comments(text)
    for match in re.finditer(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", text):
        depth, position = 1, match.end()
        while position < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[position], 0)
            position += 1
        body = text[match.end() : position - 1]
        yield match.group(1), match.start(), body.split()


def keyword_lists(arguments, keywords):
    """Splits `NAME KEY a b KEY2 c` into {KEY: [a, b], KEY2: [c]} (arguments after the name)."""
    lists, current = {}, None
    for argument in arguments[1:]:
        if argument in keywords:
            current = argument
            lists.setdefault(current, [])
        elif current:
            lists[current].append(argument)
    return lists


def read_targets(root, errors):
    targets = {}
    for tree in SCANNED_TREES:
        for directory, _, files in sorted(os.walk(os.path.join(root, tree))):
            if "CMakeLists.txt" not in files:
                continue
            cmake_file = os.path.join(directory, "CMakeLists.txt")
            relative_dir = os.path.relpath(directory, root)
            with open(cmake_file, encoding="utf-8") as stream:
                text = stream.read()
            read_cmake_file(relative_dir, os.path.relpath(cmake_file, root), text, targets, errors)
    return targets


def source_path(relative_dir, argument):
    if argument.startswith("${PROJECT_SOURCE_DIR}/"):
        return os.path.normpath(argument[len("${PROJECT_SOURCE_DIR}/") :])
    return os.path.normpath(os.path.join(relative_dir, argument))


def read_cmake_file(relative_dir, cmake_file, text, targets, errors):
    def add(name, kind, sources, deps):
        if "${" in name:
            return  # generated names (tests/kvm's loop) are read from their sources below
        if name in targets:
            errors.append(f"{cmake_file}: target {name} is declared twice")
        targets[name] = Target(name, kind, cmake_file, [source_path(relative_dir, s) for s in sources
                                                        if "${" not in s or s.startswith("${PROJECT_SOURCE_DIR}/")], deps)

    for command, _, arguments in cmake_calls(text):
        if not arguments:
            continue
        if command == "kvmm_library":
            lists = keyword_lists(arguments, {"SOURCES", "DEPS"})
            add(arguments[0], "library", lists.get("SOURCES", []), lists.get("DEPS", []))
        elif command == "kvmm_test":
            lists = keyword_lists(arguments, {"SOURCES", "DEPS", "LABEL", "SERIAL"})
            add(arguments[0], "test", lists.get("SOURCES", []), lists.get("DEPS", []))
        elif command == "kvmm_fuzzer":
            add(arguments[0] + "_fuzzer", "fuzzer", [arguments[0] + "_fuzzer.cc"], arguments[1:])
        elif command == "add_executable":
            kind = "test" if relative_dir.startswith(("tests", "bench")) else "program"
            add(arguments[0], kind, [a for a in arguments[1:] if a.endswith(SOURCE_SUFFIXES)], [])
        elif command == "target_link_libraries":
            name = arguments[0]
            if name in targets:
                targets[name].deps += [a for a in arguments[1:] if a not in ("PUBLIC", "PRIVATE", "INTERFACE")]


# ---------------------------------------------------------------------------------------------
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')


def scanned_files(root):
    for tree in SCANNED_TREES:
        for directory, _, files in sorted(os.walk(os.path.join(root, tree))):
            for name in sorted(files):
                if name.endswith(SOURCE_SUFFIXES):
                    yield os.path.relpath(os.path.join(directory, name), root)


def stem(path):
    return os.path.splitext(path)[0]


class Ownership:
    """Maps each file to the targets that own it: its own target for a listed source; for a
    header, the target with a source of the same name, else the library with sources in the
    nearest folder at or above it (inside src/)."""

    def __init__(self, targets):
        self.by_source = {}
        self.by_stem = {}
        self.libraries_by_dir = {}
        for target in targets.values():
            for source in target.sources:
                self.by_source.setdefault(source, set()).add(target.name)
                self.by_stem.setdefault(stem(source), set()).add(target.name)
                if target.kind == "library":
                    self.libraries_by_dir.setdefault(os.path.dirname(source), set()).add(target.name)

    def owners(self, path):
        if path in self.by_source:
            return self.by_source[path]
        if "_test" in os.path.basename(path):  # a test's helper header (vsock_test_fixture.h)
            directory = os.path.dirname(path)
            return {name for source, names in self.by_source.items() if os.path.dirname(source) == directory
                    and "_test" in os.path.basename(source) for name in names}
        if stem(path) in self.by_stem:
            return self.by_stem[stem(path)]
        directory = os.path.dirname(path)
        while directory.startswith("src"):
            if directory in self.libraries_by_dir:
                return self.libraries_by_dir[directory]
            directory = os.path.dirname(directory)
        return set()


class Checker:
    def __init__(self, root):
        self.root = root
        self.errors = []  # (text) failing findings
        self.known = []
        self.used_exceptions = set()
        self.targets = read_targets(root, self.errors)
        self.ownership = Ownership(self.targets)

    # -- helpers --------------------------------------------------------------------------------
    def fail(self, key, text):
        if key in KNOWN_EXCEPTIONS:
            self.used_exceptions.add(key)
            self.known.append(f"{text} [known: {KNOWN_EXCEPTIONS[key]}]")
        else:
            self.errors.append(text)

    def kvmm_deps(self, target):
        return [d for d in target.deps if d in self.targets and self.targets[d].kind == "library"]

    def closure(self, name):
        seen, stack = set(), [name]
        while stack:
            for dep in self.kvmm_deps(self.targets[stack.pop()]):
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return seen

    def allowed(self, library):
        """The libraries `library` may use directly (from LIBRARIES)."""
        rule = LIBRARIES[library]
        layers = set(LAYERS[rule.layer])
        result = {name for name, other in LIBRARIES.items() if other.layer in layers and not other.testing}
        result |= set(rule.uses)
        if rule.testing:  # test support may build on other test support
            result |= {name for name, other in LIBRARIES.items() if other.testing and other.layer in layers}
        return result

    def allowed_for(self, target):
        """Libraries a target's files may include, by the table (not by what it links)."""
        if target.kind == "library":
            return self.allowed(target.name) if target.name in LIBRARIES else set()
        if target.kind == "program":
            layers = set(LAYERS["cli"])
            return {name for name, rule in LIBRARIES.items() if rule.layer in layers and not rule.testing}
        # Tests, fuzzers and benchmarks: what their subjects may use, the subjects, test support.
        result = {name for name, rule in LIBRARIES.items() if rule.testing}
        for dep in self.kvmm_deps(target):
            if dep in LIBRARIES:
                result |= {dep} | self.allowed(dep)
        return result

    # -- checks ---------------------------------------------------------------------------------
    def check_table(self):
        libraries = {t.name for t in self.targets.values() if t.kind == "library"}
        for name in sorted(libraries - LIBRARIES.keys()):
            target = self.targets[name]
            self.errors.append(f"{target.cmake_file}: library {name} is not in tools/check_layers.py's "
                               "LIBRARIES table: give it a layer")
        for name in sorted(LIBRARIES.keys() - libraries):
            self.errors.append(f"tools/check_layers.py: LIBRARIES names {name}, which no CMakeLists.txt declares")
        for name in sorted(libraries & LIBRARIES.keys()):
            target = self.targets[name]
            allowed = self.allowed(name)
            for dep in self.kvmm_deps(target):
                if LIBRARIES.get(dep) and LIBRARIES[dep].testing and not LIBRARIES[name].testing:
                    self.fail((name, dep), f"{target.cmake_file}: {name} declares {dep}: rule: test support "
                              "is linked only by tests, fuzzers and benchmarks")
                elif dep not in allowed:
                    self.fail((name, dep), f"{target.cmake_file}: {name} declares {dep}: rule: layer "
                              f"'{LIBRARIES[name].layer}' may not use layer '{LIBRARIES[dep].layer}'"
                              if dep in LIBRARIES else f"{target.cmake_file}: {name} declares unknown {dep}")
        for program, forbidden in NEVER_LINKED.items():
            if program not in self.targets:
                continue
            reached = self.closure(program)
            for library in forbidden:
                if library in reached:
                    self.fail((program, library), f"{self.targets[program].cmake_file}: {program} links "
                              f"{library} (through its libraries): rule: {program} never links the VMM or "
                              "the devices")

    def check_file(self, path):
        with open(os.path.join(self.root, path), encoding="utf-8", errors="replace") as stream:
            lines = stream.readlines()
        owners = self.ownership.owners(path)
        in_src = path.startswith("src" + os.sep)
        if in_src and not owners:
            self.errors.append(f"{path}: belongs to no CMake target (not a source of one, and no library "
                               "has sources in its folder)")
        for number, line in enumerate(lines, 1):
            match = INCLUDE.match(line)
            if not match:
                continue
            bracket, header = match.groups()
            where = f"{path}:{number}: includes {'<' if bracket == '<' else chr(34)}{header}" \
                    f"{'>' if bracket == '<' else chr(34)}"
            if bracket == "<":
                if header == "linux/kvm.h" and not path.startswith("src/hypervisor/kvm/"):
                    self.fail((path, header), f"{where}: rule: only src/hypervisor/kvm includes <linux/kvm.h>")
                continue
            self.check_include(path, owners, where, header)

    def check_include(self, path, owners, where, header):
        local = os.path.normpath(os.path.join(os.path.dirname(path), header))
        from_root = os.path.join("src", header)
        if os.path.isfile(os.path.join(self.root, from_root)):
            included = os.path.normpath(from_root)
        elif os.path.isfile(os.path.join(self.root, local)):
            if not local.startswith("src" + os.sep) or not path.startswith("src" + os.sep):
                return  # a test's or fuzzer's own helper next to it
            included = local
            self.errors.append(f"{where}: rule: headers under src/ are included by their path from src/")
        elif path.startswith("src" + os.sep):
            self.errors.append(f"{where}: no such header under src/ or next to the file")
            return
        else:
            return  # tests/ and fuzz/ reach their own helpers through include directories
        if path.startswith("src/devices/") and included.startswith("src/hypervisor/kvm/"):
            self.fail((path, header), f"{where}: rule: devices never use hypervisor/kvm (they are tested "
                      "and fuzzed without /dev/kvm)")
            return
        header_owners = self.ownership.owners(included)
        if not header_owners or header_owners & owners:
            return
        for owner in sorted(owners):
            self.check_use(owner, path, where, header, header_owners)

    def check_use(self, owner, path, where, header, header_owners):
        target = self.targets[owner]
        if target.kind == "library" and owner not in LIBRARIES:
            return  # reported once by check_table
        is_test_code = target.kind in ("test", "fuzzer") or (target.name in LIBRARIES and LIBRARIES[target.name].testing)
        if header.startswith(TEST_SUPPORT_PREFIXES) or "/testing/" in header:
            if not is_test_code:
                self.fail((path, header), f"{where}: rule: test support is used only by tests, fuzzers and "
                          f"benchmarks ({owner} is a {target.kind})")
            if header.startswith(TEST_SUPPORT_PREFIXES):
                return
        allowed = self.allowed_for(target)
        if not header_owners & allowed:
            library = sorted(header_owners)[0]
            if target.kind == "library" and library in LIBRARIES and LIBRARIES[library].testing:
                rule = "test support is linked only by tests, fuzzers and benchmarks"
            elif target.kind == "library" and library in LIBRARIES:
                rule = (f"{owner} (layer '{LIBRARIES[owner].layer}') may not use {library} "
                        f"(layer '{LIBRARIES[library].layer}')")
            else:
                rule = f"{owner} may not use {library} ({target.kind} of {', '.join(self.kvmm_deps(target)) or 'nothing'})"
            self.fail((path, header), f"{where} ({library}): rule: {rule}")
            return
        linked = set(self.kvmm_deps(target)) if target.kind == "library" else self.closure(owner)
        if not header_owners & linked:
            library = sorted(header_owners)[0]
            how = "does not declare it in its DEPS" if target.kind == "library" else "does not link it"
            self.fail((path, header), f"{where} ({library}): rule: {owner} {how} ({target.cmake_file})")

    def run(self):
        self.check_table()
        for path in scanned_files(self.root):
            self.check_file(path)
        stale = sorted(set(KNOWN_EXCEPTIONS) - self.used_exceptions)
        return stale


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    arguments = parser.parse_args()
    root = os.path.abspath(arguments.root)
    if not os.path.isdir(os.path.join(root, "src")):
        print(f"check_layers: {root} has no src/", file=sys.stderr)
        return 2
    checker = Checker(root)
    stale = checker.run()
    for text in checker.known:
        print(f"known: {text}")
    for key in stale:
        print(f"note: known exception {key} matches nothing any more: remove it from KNOWN_EXCEPTIONS")
    for text in checker.errors:
        print(f"error: {text}")
    files = sum(1 for _ in scanned_files(root))
    if checker.errors:
        print(f"check_layers: {len(checker.errors)} violations in {files} files")
        return 1
    print(f"check_layers: {files} files follow the layers ({len(checker.known)} known exceptions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

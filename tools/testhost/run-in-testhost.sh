#!/bin/bash
# Runs a command inside the test host: an L1 Linux VM under QEMU TCG with -cpu max,
# whose emulated AMD CPU has SVM and nested paging, so kvm_amd loads in L1 and
# gives a real /dev/kvm for L2 guests on hosts without hardware virtualisation.
#
# Usage: tools/testhost/run-in-testhost.sh [OPTIONS] -- COMMAND [ARG...]
#   --timeout SECONDS  whole-run limit, default 600; QEMU is killed by its pid
#   --stall SECONDS    L1 counts as stalled (status 125) after this long without console
#                      output, default 0 (off); QEMU's vCPU state is printed first
#   --share DIR        copy DIR (at its real path) into L1, repeatable
#   --binary PATH      copy an executable and the libraries ldd lists, repeatable
#   --with-qemu        copy qemu-system-x86_64, its libraries and firmware into L1
#   --module NAME      load another kernel module in L1 (dependencies added)
#   --memory SIZE      L1 memory (QEMU -m), default 3G
#   --cpus N           L1 vCPUs, default 2
#   --verbose          show L1's kernel log (drops "quiet")
#
# COMMAND runs with busybox sh in L1, words quoted as given, in the current directory
# when that directory was shared (else in /). The guest assets of tools/guest are in
# /guest (KVMM_GUEST_DIR). L1's console streams to stdout. Exit status: COMMAND's
# status; 125 when L1 failed (no boot, kernel panic, no TESTHOST-EXIT marker, timeout).
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
REPO_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)
readonly REPO_DIR
readonly CACHE_DIR=${KVMM_CACHE_DIR:-$REPO_DIR/build/guest-cache}
readonly GUEST_DIR=$CACHE_DIR/guest
readonly TESTHOST_FAILURE=125
# The 16550 console; reset through the keyboard controller and at once on panic;
# no i8042 probing beyond what QEMU emulates.
readonly L1_CMDLINE="console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
# kvm_amd for /dev/kvm; tun for TAP networking tests in L1.
L1_MODULES=(kvm_amd tun)

timeout_seconds=600
stall_seconds=0
memory=3G
cpus=2
with_qemu=0
verbose=0
shares=()
binaries=()

log() { echo "run-in-testhost: $*" >&2; }
fail() { log "error: $*"; exit "$TESTHOST_FAILURE"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --timeout) timeout_seconds=${2:?--timeout needs SECONDS}; shift 2 ;;
        --stall) stall_seconds=${2:?--stall needs SECONDS}; shift 2 ;;
        --share) shares+=("${2:?--share needs DIR}"); shift 2 ;;
        --binary) binaries+=("${2:?--binary needs PATH}"); shift 2 ;;
        --with-qemu) with_qemu=1; shift ;;
        --module) L1_MODULES+=("${2:?--module needs NAME}"); shift 2 ;;
        --memory) memory=${2:?--memory needs SIZE}; shift 2 ;;
        --cpus) cpus=${2:?--cpus needs N}; shift 2 ;;
        --verbose) verbose=1; shift ;;
        --) shift; break ;;
        *) fail "unknown option '$1' (usage: $0 [OPTIONS] -- COMMAND...)" ;;
    esac
done
[[ $# -gt 0 ]] || fail "no COMMAND given (usage: $0 [OPTIONS] -- COMMAND...)"
[[ $timeout_seconds =~ ^[0-9]+$ && $timeout_seconds -gt 0 ]] ||
    fail "--timeout must be a positive number of seconds, not '$timeout_seconds'"
[[ $stall_seconds =~ ^[0-9]+$ ]] || fail "--stall must be a number of seconds, not '$stall_seconds'"
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 not found (package qemu-system-x86)"

"$SCRIPT_DIR/../guest/build-guest.sh" "$GUEST_DIR" || fail "building the guest assets failed"
manifest_value() { sed -n "s/^$1=//p" "$GUEST_DIR/manifest"; }
KERNEL_RELEASE=$(manifest_value kernel_release)
readonly KERNEL_RELEASE
MODULE_TREE=$(manifest_value module_tree)
readonly MODULE_TREE
BUSYBOX=$(manifest_value busybox)
readonly BUSYBOX
[[ -d $MODULE_TREE && -x $BUSYBOX ]] || fail "the guest manifest names no module tree or busybox"

mkdir -p "$CACHE_DIR/testhost"
RUN_DIR=$(mktemp -d "$CACHE_DIR/testhost/run.XXXXXX") || fail "cannot create a run directory"
# QEMU's monitor socket, in a short directory of its own: a Unix socket path has at most 107
# bytes, which a deep checkout could exceed.
MONITOR_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kvmm-l1.XXXXXX") || fail "cannot create a monitor directory"
readonly MONITOR_SOCKET=$MONITOR_DIR/monitor.sock
qemu_pid=
tee_pid=
cleanup() {
    [[ -n $qemu_pid ]] && kill -KILL "$qemu_pid" 2>/dev/null
    [[ -n $tee_pid ]] && kill "$tee_pid" 2>/dev/null
    rm -rf "$RUN_DIR" "$MONITOR_DIR"
}
trap cleanup EXIT
trap 'log "interrupted"; exit $TESTHOST_FAILURE' INT TERM

# --- base initramfs (cached): busybox, /init, modules, guest assets ----------------
base_stamp=$(
    cat "$GUEST_DIR/.stamp"
    echo "${L1_MODULES[*]}"
    cat "$SCRIPT_DIR/run-in-testhost.sh" "$SCRIPT_DIR/init.sh" | sha256sum
)
base_archive=$CACHE_DIR/testhost/base.cpio
if [[ ! -f $base_archive || ! -f $base_archive.stamp || $(cat "$base_archive.stamp") != "$base_stamp" ]]; then
    log "building the L1 base initramfs"
    root=$RUN_DIR/base
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc/testhost,guest}
    cp "$BUSYBOX" "$root/bin/busybox" && install -m 0755 "$SCRIPT_DIR/init.sh" "$root/init" ||
        fail "cannot copy busybox and /init into $root"
    while read -r applet; do
        [[ -e $root/$applet ]] && continue
        ln -s "$(realpath -m --relative-to="$root/$(dirname "$applet")" "$root/bin/busybox")" "$root/$applet"
    done < <("$BUSYBOX" --list-full)
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\n' > "$root/etc/group"
    [[ $EUID -eq 0 ]] && mknod -m 0600 "$root/dev/console" c 5 1
    python3 "$SCRIPT_DIR/../guest/module-order.py" "$MODULE_TREE" "${L1_MODULES[@]}" \
        > "$root/etc/testhost/modules" || fail "resolving the L1 modules failed"
    while read -r module; do
        install -D -m 0644 "$MODULE_TREE/$module" "$root/lib/modules/$KERNEL_RELEASE/$module" ||
            fail "cannot copy module $module"
    done < "$root/etc/testhost/modules"
    cp "$GUEST_DIR"/{bzImage,vmlinux,initrd.cpio.gz,rootfs.ext4,kvmm-guest-tool,cmdline,pvh-entry,manifest,config} \
        "$root/guest/" || fail "cannot copy the guest assets"
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
        > "$base_archive.tmp" || fail "writing the L1 base initramfs failed"
    mv "$base_archive.tmp" "$base_archive"
    echo "$base_stamp" > "$base_archive.stamp"
    rm -rf "$root"
fi

# --- per-run initramfs: shares, binaries, QEMU, the command ---------------------------
# Paths are archived relative to /, so they keep their absolute path in L1. Each file
# needs its parent directories in the archive before it (the kernel's initramfs
# unpacker does not create them); those are archived dereferenced, so a merged-/usr
# symlink such as /lib becomes a plain directory in L1.
declare -A listed=()
dereferenced_list=$RUN_DIR/dereferenced.list
: > "$dereferenced_list"
add_with_parents() {
    local path=$1 parent
    parent=$(dirname "$path")
    [[ $parent != / ]] && add_with_parents "$parent"
    if [[ -z ${listed[$path]:-} ]]; then
        listed[$path]=1
        echo "${path#/}" >> "$dereferenced_list"
    fi
}
# An executable and every library its dynamic loader resolves (ldd prints
# "name => /path (address)" and the loader as "/path (address)").
add_binary() {
    local binary library
    binary=$(command -v "$1") || fail "--binary $1: not found"
    [[ $binary == /* ]] || binary=$(realpath "$binary")
    add_with_parents "$binary"
    while read -r library; do
        add_with_parents "$library"
    done < <(ldd "$binary" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}

for binary in "${binaries[@]}"; do add_binary "$binary"; done
share_list=$RUN_DIR/share.list
: > "$share_list"
for share in "${shares[@]}"; do
    real=$(realpath -e "$share" 2>/dev/null) || fail "--share $share: no such directory"
    [[ -d $real ]] || fail "--share $share: not a directory"
    add_with_parents "$(dirname "$real")"
    (cd / && find "${real#/}") >> "$share_list"
done
if [[ $with_qemu -eq 1 ]]; then
    add_binary qemu-system-x86_64
    # Firmware (qboot for -M microvm, SeaBIOS for pc/q35) and option ROMs; links
    # into /usr/share/seabios are followed, dangling ones skipped.
    while read -r file; do
        [[ -e $file ]] && add_with_parents "$file"
    done < <(find /usr/share/qemu /usr/share/seabios -maxdepth 1 2>/dev/null)
fi

command_root=$RUN_DIR/command
mkdir -p "$command_root/testhost"
{
    echo "export KVMM_GUEST_DIR=/guest KVMM_TESTHOST=1"
    printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
    printf '%q ' "$@"
    echo
} > "$command_root/testhost/command.sh"

initramfs=$RUN_DIR/initramfs.cpio
{
    cat "$base_archive"
    (cd / && cpio -o -H newc -R 0:0 -L --quiet < "$dereferenced_list") ||
        fail "archiving the binaries for L1 failed"
    if [[ -s $share_list ]]; then
        (cd / && cpio -o -H newc -R 0:0 --quiet < "$share_list") ||
            fail "archiving the shared directories for L1 failed"
    fi
    (cd "$command_root" && find testhost | cpio -o -H newc -R 0:0 --quiet)
} > "$initramfs" || fail "writing the L1 initramfs failed"

# --- run L1 -------------------------------------------------------------------------
append=$L1_CMDLINE
# Under TCG the guest's TSC is the host's (QEMU reads the host TSC for RDTSC), and
# calibrating it against the emulated PIT fails when the host is busy, after which
# the kernel hangs before init. Tell it the frequency instead (kernel-parameters.txt,
# tsc_early_khz).
host_mhz=$(awk -F': *' '/^cpu MHz/ { print $2; exit }' /proc/cpuinfo)
[[ -n $host_mhz ]] && append+=" tsc_early_khz=$(awk -v m="$host_mhz" 'BEGIN { printf "%d", m * 1000 }')"
[[ $verbose -eq 1 ]] || append+=" quiet"
console_log=$RUN_DIR/console.log
mkfifo "$RUN_DIR/console.fifo"
tee "$console_log" < "$RUN_DIR/console.fifo" &
tee_pid=$!

start=$(date +%s.%N)
# microvm: no PCI or firmware tables to scan under TCG, so L1 boots in seconds; its
# ACPI GED lets poweroff end QEMU, -no-reboot turns a reset (panic) into an exit.
# The PIT (and the PIC it interrupts through) must be there: without them the kernel
# cannot calibrate the TSC under TCG and hangs before starting init.
qemu-system-x86_64 \
    -M microvm,x-option-roms=off,rtc=on,isa-serial=on,acpi=on,pit=on,pic=on \
    -accel tcg -cpu max -m "$memory" -smp "$cpus" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial stdio -monitor "unix:$MONITOR_SOCKET,server=on,wait=off" \
    -kernel "$GUEST_DIR/bzImage" -initrd "$initramfs" -append "$append" \
    < /dev/null > "$RUN_DIR/console.fifo" 2>&1 &
qemu_pid=$!

# qemu_cpu_ticks: user+system CPU time of QEMU so far, in clock ticks (proc(5) stat 14, 15).
qemu_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$qemu_pid/stat" 2>/dev/null; }

# report_stall: what L1's vCPUs were doing when its console went silent - whether QEMU
# still burns CPU, halted or running vCPUs, their registers and LAPIC timers - so that a
# stall can be told apart from a slow test and traced to its cause.
report_stall() {
    local ticks_before ticks_after
    ticks_before=$(qemu_cpu_ticks)
    sleep 5
    ticks_after=$(qemu_cpu_ticks)
    log "QEMU used $(( (${ticks_after:-0} - ${ticks_before:-0}) * 100 / $(getconf CLK_TCK) / 5 ))% of a host CPU over 5 s of silence"
    local commands=("info cpus" "info registers -a")
    local cpu
    for (( cpu = 0; cpu < cpus; cpu++ )); do commands+=("info lapic $cpu"); done
    commands+=("info pic" "info irq")
    # (vector and x87 registers left out: they say nothing about a stall)
    python3 "$SCRIPT_DIR/monitor.py" "$MONITOR_SOCKET" "${commands[@]}" | grep -v -E "^(YMM|XMM|FPR|FCW)" >&2
}

timed_out=0
stalled=0
deadline=$(( $(date +%s) + timeout_seconds ))
last_size=-1
printf -v last_output '%(%s)T' -1
while kill -0 "$qemu_pid" 2>/dev/null; do
    printf -v now '%(%s)T' -1
    size=$(stat -c %s "$console_log" 2>/dev/null || echo 0)
    if [[ $size != "$last_size" ]]; then
        last_size=$size
        last_output=$now
    elif (( stall_seconds > 0 && now - last_output >= stall_seconds )); then
        stalled=1
        log "no console output from L1 for $stall_seconds s; its state:"
        report_stall
    fi
    if (( ! stalled && now >= deadline )); then
        timed_out=1
        log "L1 still running after $timeout_seconds s; its state:"
        report_stall
    fi
    if (( stalled || timed_out )); then
        kill -TERM "$qemu_pid" 2>/dev/null
        sleep 2
        kill -KILL "$qemu_pid" 2>/dev/null
        break
    fi
    sleep 0.2
done
wait "$qemu_pid" 2>/dev/null
qemu_status=$?
qemu_pid=
wait "$tee_pid" 2>/dev/null
tee_pid=
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

console=$(tr -d '\r' < "$console_log")
if [[ $stalled -eq 1 ]]; then
    fail "L1 stalled: no console output for $stall_seconds s; QEMU (L1) was killed"
fi
if [[ $timed_out -eq 1 ]]; then
    fail "timed out after $timeout_seconds s; QEMU (L1) was killed"
fi
# /init prints the marker after COMMAND has finished, so the last one is its own.
marker=$(grep -E '^TESTHOST-EXIT [0-9]+$' <<< "$console" | tail -n 1)
if [[ -z $marker ]]; then
    if grep -q 'Kernel panic' <<< "$console"; then
        fail "the L1 kernel panicked: $(grep -m1 'Kernel panic' <<< "$console")"
    fi
    if ! grep -q '^TESTHOST-READY' <<< "$console"; then
        fail "L1 did not reach /init (QEMU exit status $qemu_status); rerun with --verbose"
    fi
    fail "L1 ended without a TESTHOST-EXIT line (QEMU exit status $qemu_status)"
fi
ready=$(sed -n 's/^TESTHOST-READY uptime=//p' <<< "$console" | head -n 1)
status=${marker#TESTHOST-EXIT }
log "COMMAND exited with $status; L1 reached /init at ${ready:-?} s of its uptime; whole run ${elapsed} s"
exit "$status"

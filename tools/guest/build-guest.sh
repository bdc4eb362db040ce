#!/bin/bash
# Builds the Linux test guest of kvmm from Debian packages.
#
# Usage: tools/guest/build-guest.sh OUTDIR
#
# Outputs (see tools/guest/README.md):
#   OUTDIR/bzImage          Debian cloud kernel (linux-image-*-cloud-amd64), as shipped
#   OUTDIR/vmlinux          uncompressed ELF extracted from the bzImage (PVH boot)
#   OUTDIR/pvh-entry        XEN_ELFNOTE_PHYS32_ENTRY of vmlinux ("0x..." or "none")
#   OUTDIR/initrd.cpio.gz   busybox + virtio modules + /init (tools/guest/init.sh)
#   OUTDIR/rootfs.ext4      the same tree as an ext4 image (mke2fs -d, no mounts)
#   OUTDIR/kvmm-guest-tool  static test helper (kvmm-guest-tool.c), also in the initramfs
#   OUTDIR/config           the kernel's build configuration
#   OUTDIR/cmdline          the recommended kernel command line
#   OUTDIR/manifest         package versions and the module tree used
#
# The kernel package is downloaded with `apt-get download` and unpacked with
# `dpkg-deb -x` into the cache (KVMM_CACHE_DIR, default <repo>/build/guest-cache);
# nothing is installed on the host. A second run with the same package versions and
# the same scripts does nothing. Archives and images are reproducible: sorted file
# lists, owner 0:0, timestamps SOURCE_DATE_EPOCH (default 1), fixed ext4 UUID and
# hash seed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
REPO_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)
readonly REPO_DIR
readonly CACHE_DIR=${KVMM_CACHE_DIR:-$REPO_DIR/build/guest-cache}
# mke2fs treats a fake time of 0 as unset, hence the default of 1.
readonly EPOCH=${SOURCE_DATE_EPOCH:-1}
readonly KERNEL_META_PACKAGE=linux-image-cloud-amd64
readonly BUSYBOX_PACKAGE=busybox-static
# Console on the 16550 at 0x3f8; reboot through the keyboard controller; reboot at
# once on panic instead of hanging; the i8042 options keep the driver from probing
# an AUX port, a multiplexer or PnP that a VMM does not emulate.
readonly CMDLINE="console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd"
# Loaded by /init in this order (dependencies are added by module-order.py).
readonly GUEST_MODULES=(virtio_mmio virtio_pci virtio_blk virtio_net virtio_console
    virtio_rng virtio_balloon vmw_vsock_virtio_transport pvpanic_mmio)
readonly ROOTFS_SIZE=64M
readonly ROOTFS_UUID=6b766d6d-0000-4000-8000-000000000001

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
OUTDIR=$1
mkdir -p "$OUTDIR" "$CACHE_DIR/debs" "$CACHE_DIR/extract"
OUTDIR=$(cd "$OUTDIR" && pwd)

# Candidate version of a package, as apt would download it.
candidate_version() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }'
}

# The versioned kernel package that the meta package depends on.
kernel_package() {
    apt-cache depends "$KERNEL_META_PACKAGE" 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

resolve_packages() {
    KERNEL_PACKAGE=$(kernel_package)
    KERNEL_VERSION=$([[ -n $KERNEL_PACKAGE ]] && candidate_version "$KERNEL_PACKAGE" || true)
    BUSYBOX_VERSION=$(candidate_version "$BUSYBOX_PACKAGE")
}

resolve_packages
if [[ -z $KERNEL_VERSION || $KERNEL_VERSION == "(none)" || -z $BUSYBOX_VERSION ]]; then
    log "package lists do not know $KERNEL_META_PACKAGE; running apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    resolve_packages
fi
[[ -n $KERNEL_PACKAGE && -n $KERNEL_VERSION && $KERNEL_VERSION != "(none)" ]] ||
    die "cannot resolve the kernel package behind $KERNEL_META_PACKAGE"
[[ -n $BUSYBOX_VERSION && $BUSYBOX_VERSION != "(none)" ]] ||
    die "cannot resolve $BUSYBOX_PACKAGE"

# Everything that determines the outputs: package versions and these scripts.
STAMP=$(
    echo "$KERNEL_PACKAGE=$KERNEL_VERSION $BUSYBOX_PACKAGE=$BUSYBOX_VERSION epoch=$EPOCH"
    cat "$SCRIPT_DIR/build-guest.sh" "$SCRIPT_DIR/init.sh" "$SCRIPT_DIR/kvmm-guest-tool.c" \
        "$SCRIPT_DIR/module-order.py" "$SCRIPT_DIR/extract-vmlinux.py" | sha256sum
)
readonly OUTPUTS=(bzImage vmlinux pvh-entry initrd.cpio.gz rootfs.ext4 kvmm-guest-tool config cmdline manifest)
outputs_current() {
    [[ -f $OUTDIR/.stamp && $(cat "$OUTDIR/.stamp") == "$STAMP" ]] || return 1
    local output
    for output in "${OUTPUTS[@]}"; do [[ -f $OUTDIR/$output ]] || return 1; done
}
if outputs_current; then
    log "$OUTDIR is up to date ($KERNEL_PACKAGE $KERNEL_VERSION)"
    exit 0
fi

# Downloads PACKAGE=VERSION into the cache once; prints the .deb path.
fetch_deb() {
    local package=$1 version=$2 deb
    for deb in "$CACHE_DIR/debs/${package}_"*.deb; do
        if [[ -f $deb && $(dpkg-deb -f "$deb" Version) == "$version" ]]; then
            echo "$deb"
            return
        fi
    done
    log "downloading $package $version"
    # apt's sandbox user may not write to the cache; the download is verified by apt
    # against the signed archive index either way.
    (cd "$CACHE_DIR/debs" && apt-get download -q "$package=$version" >&2) ||
        die "apt-get download $package=$version failed"
    for deb in "$CACHE_DIR/debs/${package}_"*.deb; do
        if [[ -f $deb && $(dpkg-deb -f "$deb" Version) == "$version" ]]; then
            echo "$deb"
            return
        fi
    done
    die "apt-get download left no $package $version in $CACHE_DIR/debs"
}

# Unpacks a .deb into the cache once; prints the directory.
extract_deb() {
    local deb=$1 directory
    directory=$CACHE_DIR/extract/$(basename "$deb" .deb)
    if [[ ! -f $directory/.complete ]]; then
        rm -rf "$directory"
        mkdir -p "$directory"
        dpkg-deb -x "$deb" "$directory"
        touch "$directory/.complete"
    fi
    echo "$directory"
}

KERNEL_TREE=$(extract_deb "$(fetch_deb "$KERNEL_PACKAGE" "$KERNEL_VERSION")")
BUSYBOX_TREE=$(extract_deb "$(fetch_deb "$BUSYBOX_PACKAGE" "$BUSYBOX_VERSION")")

KERNEL_IMAGE=$(echo "$KERNEL_TREE"/boot/vmlinuz-*)
[[ -f $KERNEL_IMAGE ]] || die "no /boot/vmlinuz-* in $KERNEL_PACKAGE"
KERNEL_RELEASE=${KERNEL_IMAGE##*/vmlinuz-}
MODULE_TREE=$KERNEL_TREE/lib/modules/$KERNEL_RELEASE
BUSYBOX=$BUSYBOX_TREE/bin/busybox
[[ -x $BUSYBOX ]] || die "no bin/busybox in $BUSYBOX_PACKAGE"

WORK=$OUTDIR/.work
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

# --- kernel images --------------------------------------------------------------
cp "$KERNEL_IMAGE" "$WORK/bzImage"
cp "$KERNEL_TREE/boot/config-$KERNEL_RELEASE" "$WORK/config"
python3 "$SCRIPT_DIR/extract-vmlinux.py" "$WORK/bzImage" "$WORK/vmlinux"

# XEN_ELFNOTE_PHYS32_ENTRY (type 18, owner "Xen", xen/include/public/elfnote.h) is the
# 32-bit physical entry point of the PVH boot protocol; its first 4 bytes are the
# address, little endian.
PVH_ENTRY=$(readelf -n "$WORK/vmlinux" | awk '
    /^ *Xen / && /\(0x00000012\)/ { found = 1; next }
    found && /description data:/ {
        printf "0x%s%s%s%s\n", $6, $5, $4, $3; exit
    }')
echo "${PVH_ENTRY:-none}" > "$WORK/pvh-entry"
echo "$CMDLINE" > "$WORK/cmdline"

# --- test helper ----------------------------------------------------------------
# Static (glibc's libc.a from libc6-dev): the initramfs has no shared libraries, and the
# same file runs in the test host's L1. No build id, so the bytes do not depend on paths.
gcc -static -O2 -Wall -Wextra -Werror -Wl,--build-id=none -o "$WORK/kvmm-guest-tool" \
    "$SCRIPT_DIR/kvmm-guest-tool.c" || die "compiling kvmm-guest-tool.c failed (gcc and libc6-dev needed)"

# --- root tree ------------------------------------------------------------------
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc/kvmm}
cp "$BUSYBOX" "$ROOT/bin/busybox"
install -m 0755 "$WORK/kvmm-guest-tool" "$ROOT/bin/kvmm-guest-tool"
install -m 0755 "$SCRIPT_DIR/init.sh" "$ROOT/init"
ln -s ../init "$ROOT/sbin/init"
while read -r applet; do
    [[ $applet == bin/busybox || -e $ROOT/$applet ]] && continue
    # Relative links so the tree works wherever it is mounted.
    relative=$(realpath -m --relative-to="$ROOT/$(dirname "$applet")" "$ROOT/bin/busybox")
    ln -s "$relative" "$ROOT/$applet"
done < <("$BUSYBOX" --list-full | LC_ALL=C sort)
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\n' > "$ROOT/etc/group"
# The kernel opens /dev/console for init before /init can mount devtmpfs.
if [[ $EUID -eq 0 ]]; then
    mknod -m 0600 "$ROOT/dev/console" c 5 1
fi

python3 "$SCRIPT_DIR/module-order.py" "$MODULE_TREE" "${GUEST_MODULES[@]}" \
    > "$ROOT/etc/kvmm/modules"
while read -r module; do
    install -D -m 0644 "$MODULE_TREE/$module" "$ROOT/lib/modules/$KERNEL_RELEASE/$module"
done < "$ROOT/etc/kvmm/modules"

find "$ROOT" -exec touch -h -d "@$EPOCH" {} +

(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n > "$WORK/initrd.cpio.gz"

rm -f "$WORK/rootfs.ext4"
E2FSPROGS_FAKE_TIME=$EPOCH mke2fs -q -F -t ext4 -d "$ROOT" -L kvmm-root -U "$ROOTFS_UUID" \
    -E "root_owner=0:0,hash_seed=$ROOTFS_UUID" "$WORK/rootfs.ext4" "$ROOTFS_SIZE" >/dev/null
# mke2fs -d copies each inode's ctime, which touch cannot set, and its atime, which
# reading the tree (cpio above) has moved; pin both.
(cd "$ROOT" && find . | LC_ALL=C sort | sed 's|^\.||; s|^$|/|' |
    while read -r path; do
        echo "set_inode_field $path ctime @$EPOCH"
        echo "set_inode_field $path atime @$EPOCH"
    done) > "$WORK/debugfs-commands"
E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -f "$WORK/debugfs-commands" "$WORK/rootfs.ext4" >/dev/null 2>&1 ||
    die "debugfs could not set the inode times of rootfs.ext4"

cat > "$WORK/manifest" <<MANIFEST
kernel_package=$KERNEL_PACKAGE
kernel_version=$KERNEL_VERSION
kernel_release=$KERNEL_RELEASE
busybox_package=$BUSYBOX_PACKAGE
busybox_version=$BUSYBOX_VERSION
module_tree=$MODULE_TREE
busybox=$BUSYBOX
pvh_entry=${PVH_ENTRY:-none}
MANIFEST

for output in "${OUTPUTS[@]}"; do
    mv "$WORK/$output" "$OUTDIR/$output"
done
echo "$STAMP" > "$OUTDIR/.stamp"
log "built $OUTDIR from $KERNEL_PACKAGE $KERNEL_VERSION (PVH entry: ${PVH_ENTRY:-none})"

#!/usr/bin/env bash
# Prepare the test VM: a Debian 6.1 stock kernel (real ip6tnl + nftables NAT)
# and a tiny initramfs that mounts the host root read-only over virtio-9p.
#
#   tests/vm/mkinitramfs.sh [-c CACHE] [KERNEL.deb]
#
# Everything goes to CACHE (default tests/vm/cache, gitignored):
#   dl/                     downloaded .debs (apt-get download, nothing is installed)
#   k/<ver>/                the extracted kernel package + depmod output
#   k/<ver>/boot/vmlinux-<ver>   the uncompressed ELF (booted through PVH: no decompressor)
#   initramfs-<ver>.cpio.gz busybox-static + virtio/9p modules + tests/vm/initramfs/{init,stage2}
# Without KERNEL.deb the newest linux-image-6.1.0-N-amd64 apt offers is used
# (or the one already in dl/). Re-running is cheap: finished steps are skipped.
# Needs: apt-get, dpkg-deb, depmod/modprobe (kmod), python3, gzip.
set -euo pipefail
SRC=$(cd "$(dirname "$0")" && pwd)
CACHE=${MAPE_VM_CACHE:-$(. "$SRC/paths.sh"; vm_cache_default "$SRC")}
while getopts c:h o; do
	case $o in
	c) CACHE=$OPTARG ;;
	*) sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
mkdir -p "$CACHE/dl" && CACHE=$(cd "$CACHE" && pwd)
case $CACHE/ in /tmp/* | /run/* | /var/*)
	echo "mkinitramfs: cache $CACHE must not be under /tmp, /run or /var (fresh tmpfs in the guest)" >&2; exit 2 ;;
esac
for t in apt-get dpkg-deb depmod modprobe python3 gzip; do
	command -v "$t" >/dev/null || { echo "mkinitramfs: missing tool: $t" >&2; exit 1; }
done

# apt-get download writes into the current folder; as root it falls back to an
# unsandboxed download (harmless notice) when _apt cannot write there.
apt_download() { (cd "$CACHE/dl" && apt-get download -q "$@" 2>&1 | grep -v -e 'unsandboxed' -e '^W: ' >&2 || true); }

DEB=${1:-}
if [ -z "$DEB" ]; then
	DEB=$(ls "$CACHE"/dl/linux-image-6.1.0-*-amd64_*_amd64.deb 2>/dev/null | sort -V | tail -1 || true)
fi
pick() { apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1; }
fetch_kernel() {
	PKG=$(pick)
	[ -n "$PKG" ] || return 1
	echo "mkinitramfs: downloading $PKG" >&2
	apt_download "$PKG"
	DEB=$(ls "$CACHE"/dl/"$PKG"_*_amd64.deb 2>/dev/null | sort -V | tail -1 || true)
	[ -n "$DEB" ]
}
if [ -z "$DEB" ]; then
	# stale package lists can name a kernel the mirror no longer has: update once and retry
	fetch_kernel || { apt-get update -q >&2 || true; fetch_kernel; } || {
		echo "mkinitramfs: cannot download a linux-image-6.1.0-*-amd64 with apt (Debian 12 sources needed)" >&2
		exit 1
	}
fi
V=$(dpkg-deb -f "$DEB" Package); V=${V#linux-image-}
KD=$CACHE/k/$V

if [ ! -e "$KD/.extracted" ]; then
	echo "mkinitramfs: extracting $(basename "$DEB")" >&2
	rm -rf "$KD"; mkdir -p "$KD"
	dpkg-deb -x "$DEB" "$KD"
	touch "$KD/.extracted"
fi
# the .deb ships no modules.dep: build it for modprobe -d
[ -e "$KD/lib/modules/$V/modules.dep.bin" ] || depmod -b "$KD" "$V"

# The bzImage carries the kernel as an xz stream; its ELF (with a PVH entry
# note, CONFIG_PVH=y) can be booted by QEMU directly, which saves the ~3 s the
# decompressor takes under TCG.
if [ ! -e "$KD/boot/vmlinux-$V" ]; then
	python3 - "$KD/boot/vmlinuz-$V" "$KD/boot/vmlinux-$V" <<'PY'
import lzma, sys
blob = open(sys.argv[1], "rb").read()
magic = b"\xfd7zXZ\x00"
pos = blob.find(magic)
while pos >= 0:
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(blob[pos:])
    except lzma.LZMAError:
        elf = b""
    if elf[:4] == b"\x7fELF":
        with open(sys.argv[2] + ".part", "wb") as f:
            f.write(elf)
        import os
        os.rename(sys.argv[2] + ".part", sys.argv[2])
        sys.exit(0)
    pos = blob.find(magic, pos + 1)
sys.exit("mkinitramfs: no xz-compressed ELF inside " + sys.argv[1])
PY
fi

# busybox-static: only unpacked (installing it would conflict with busybox)
BB=$CACHE/dl/busybox/bin/busybox
if [ ! -x "$BB" ]; then
	ls "$CACHE"/dl/busybox-static_*.deb >/dev/null 2>&1 || apt_download busybox-static
	ls "$CACHE"/dl/busybox-static_*.deb >/dev/null 2>&1 || { apt-get update -q >&2 || true; apt_download busybox-static; }
	B=$(ls "$CACHE"/dl/busybox-static_*.deb 2>/dev/null | sort -V | tail -1 || true)
	[ -n "$B" ] || { echo "mkinitramfs: apt-get download busybox-static failed" >&2; exit 1; }
	rm -rf "$CACHE/dl/busybox"; dpkg-deb -x "$B" "$CACHE/dl/busybox"
fi

OUT=$CACHE/initramfs-$V.cpio.gz
STAMP=$(cat "$SRC/initramfs/init" "$SRC/initramfs/stage2" "$0" | md5sum | cut -c1-16)
if [ -e "$OUT" ] && [ "$(cat "$OUT.stamp" 2>/dev/null)" = "$STAMP" ]; then
	echo "$V"; exit 0
fi
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST"/{bin,modules,proc,sys,dev,newroot}
cp "$BB" "$ST/bin/busybox"
install -m 755 "$SRC/initramfs/init" "$ST/init"
install -m 644 "$SRC/initramfs/stage2" "$ST/stage2"
# virtio-pci + 9p and their dependencies, in load order; everything else
# (veth, ip6_tunnel, nf_tables, ...) is loaded later from the host copy of k/.
for m in virtio_pci 9pnet_virtio 9p; do
	modprobe -d "$KD" -S "$V" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' >"$ST/list"
while read -r ko; do
	cp "$ko" "$ST/modules/"
	basename "$ko" >>"$ST/modules.load"
done <"$ST/list"
rm "$ST/list"
(cd "$ST" && find . -mindepth 1 | "$BB" cpio -o -H newc -R 0:0 2>/dev/null | gzip -6 >"$OUT.part")
mv "$OUT.part" "$OUT"
echo "$STAMP" >"$OUT.stamp"
echo "mkinitramfs: kernel $V, initramfs $(stat -c %s "$OUT") bytes, modules: $(tr '\n' ' ' <"$ST/modules.load")" >&2
echo "$V"

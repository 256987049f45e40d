#!/usr/bin/env bash
# Builds (once, cached) what one foreign-architecture guest boots: Debian 12's own kernel for
# that architecture and a base initramfs holding its modules, a static busybox, and Debian's
# nft, ip (iproute2) and nc (netcat-openbsd) with exactly the shared libraries they load.
#
#   tests/arch/mkguest.sh ARCH        ARCH: mipsel | armhf | arm64
#
# Prints the folder that holds `kernel`, `initramfs.cpio.gz` and `manifest` (what went in).
# Everything comes from Debian packages fetched with `apt-get download` through a private apt
# state (its own sources.list, lists and status file under the cache: the machine's dpkg gets
# no foreign architecture and its apt lists are not touched). Nothing is installed.
#
# Cache ($MAPE_ARCH_CACHE, default ~/.cache/mape-rs/arch):
#   apt/                  private apt state (lists for mipsel, armhf and arm64 of bookworm main)
#   dl/<arch>/            the .debs of the current set
#   <arch>-<key>/         kernel + initramfs; <key> hashes the resolved package versions and
#                         this script and tests/arch/init, so a new kernel, library or script
#                         builds a new one (older folders of that ARCH are removed)
# The apt lists are fetched when missing, when a package cannot be resolved or downloaded (the
# mirror moved on), or with MAPE_ARCH_REFRESH=1.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${MAPE_ARCH_CACHE:-${HOME:-/root}/.cache/mape-rs/arch}
ARCH=${1:-}

die() { echo "mkguest: $*" >&2; exit 1; }
log() { echo "mkguest[$ARCH]: $*" >&2; }

# ARCH -> kernel metapackage | GNU triplet of the Debian libraries
case $ARCH in
mipsel) KMETA=linux-image-4kc-malta TRIPLET=mipsel-linux-gnu ;;
armhf) KMETA=linux-image-armmp TRIPLET=arm-linux-gnueabihf ;;
arm64) KMETA=linux-image-arm64 TRIPLET=aarch64-linux-gnu ;;
*) echo "usage: mkguest.sh mipsel|armhf|arm64" >&2; exit 2 ;;
esac
# Userland from Debian: busybox (shell and tools), nft, ip, nc (busybox's nc has no UDP).
USERLAND=(busybox-static nftables iproute2 netcat-openbsd)
# Modules the bed needs (dependencies are added by modprobe --show-depends).
MODULES=(veth ip6_tunnel tunnel6 nf_tables nft_nat nft_chain_nat nft_numgen nft_hash nft_objref nft_ct
	nf_nat nf_conntrack nf_defrag_ipv4 nf_defrag_ipv6)

for t in apt-get apt-cache dpkg-deb depmod modprobe readelf cpio gzip sha256sum flock; do
	command -v "$t" >/dev/null || die "missing tool: $t"
done
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# ---- private apt ------------------------------------------------------------------------------
A=$CACHE/apt
mkdir -p "$A/state/lists/partial" "$A/cache/archives/partial" "$A/etc"
[ -e "$A/status" ] || : >"$A/status"
cat >"$A/etc/sources.list.new" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
EOF
mv "$A/etc/sources.list.new" "$A/etc/sources.list"
APT_O=(-o "Dir::State=$A/state" -o "Dir::State::status=$A/status" -o "Dir::Cache=$A/cache"
	-o "Dir::Etc::SourceList=$A/etc/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
	-o Acquire::Languages=none -o APT::Sandbox::User=root
	-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
	-o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
	-o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false)
# Queries see only ARCH, as if it were the native architecture (names need no :ARCH).
# The machine's apt.conf may turn the binary cache off (Docker images do): one per ARCH here,
# or every query parses the lists again (about 1 s each).
Q_O=("${APT_O[@]}" -o "APT::Architecture=$ARCH" -o "APT::Architectures::=$ARCH"
	-o "Dir::Cache::pkgcache=$A/cache/pkgcache-$ARCH.bin" -o "Dir::Cache::srcpkgcache=$A/cache/srcpkgcache-$ARCH.bin")

apt_update() {
	log "fetching the apt lists (bookworm main: mipsel, armhf, arm64)"
	rm -f "$A/cache/"*pkgcache-*.bin
	# Serialised with every other apt user of this machine.
	flock /tmp/apt.lock apt-get "${APT_O[@]}" -o APT::Architecture=amd64 \
		-o APT::Architectures::=mipsel -o APT::Architectures::=armhf -o APT::Architectures::=arm64 \
		-q update >"$CACHE/apt-update.log" 2>&1 || die "apt-get update failed: $(tail -3 "$CACHE/apt-update.log")"
}

# The package set and versions: "name version" lines, sorted.
resolve() {
	local kpkg pkgs p v
	kpkg=$(apt-cache "${Q_O[@]}" depends "$KMETA" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\).*/\1/p' | head -1)
	[ -n "$kpkg" ] || return 1
	pkgs=$(
		{
			echo "$kpkg"
			printf '%s\n' "${USERLAND[@]}"
			# Libraries the userland may load: every lib* in its dependency tree (the ELF
			# closure below picks the ones really needed).
			apt-cache "${Q_O[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
				--no-breaks --no-replaces --no-enhances "${USERLAND[@]}" 2>/dev/null |
				grep -E '^(lib[a-z0-9.+-]+|zlib1g)$' || true
		} | sort -u
	)
	# One query for all versions: "name version" per package, and every package must have one.
	apt-cache "${Q_O[@]}" show --no-all-versions $pkgs 2>/dev/null |
		awk '/^Package: / { p = $2 } /^Version: / { print p, $2 }' | sort -u >"$CACHE/.set-$ARCH"
	[ "$(wc -l <"$CACHE/.set-$ARCH")" = "$(echo "$pkgs" | wc -w)" ] || return 1
	cat "$CACHE/.set-$ARCH"
}

exec 9>"$CACHE/.lock-$ARCH"
flock 9
[ -n "$(ls "$A/state/lists/" 2>/dev/null | grep _Packages)" ] && [ -z "${MAPE_ARCH_REFRESH:-}" ] || apt_update
if ! SET=$(resolve); then
	apt_update
	SET=$(resolve) || die "cannot resolve $KMETA and ${USERLAND[*]} for $ARCH"
fi
KEY=$({ echo "$ARCH"; echo "$SET"; cat "$0" "$HERE/init"; } | sha256sum | cut -c1-16)
OUT=$CACHE/$ARCH-$KEY
if [ -s "$OUT/initramfs.cpio.gz" ] && [ -s "$OUT/kernel" ]; then
	echo "$OUT"
	exit 0
fi

# ---- download ---------------------------------------------------------------------------------
DL=$CACHE/dl/$ARCH
mkdir -p "$DL"
download() {
	local p v want=()
	while read -r p v; do
		# apt names the file <name>_<version>_<arch>.deb, with an epoch's colon as %3a
		ls "$DL/${p}_"*"${v#*:}_"*.deb >/dev/null 2>&1 || want+=("$p=$v")
	done <<<"$SET"
	[ ${#want[@]} -eq 0 ] && return 0
	log "downloading ${#want[@]} packages"
	(cd "$DL" && flock /tmp/apt.lock apt-get "${Q_O[@]}" -q download "${want[@]}") >"$CACHE/apt-download.log" 2>&1
}
if ! download; then
	apt_update
	SET=$(resolve) || die "cannot resolve the package set for $ARCH"
	download || die "apt-get download failed: $(tail -3 "$CACHE/apt-download.log")"
fi
deb_of() { # package version -> its .deb in DL (apt writes the epoch as %3a)
	local f
	f=$(ls "$DL/${1}_"*.deb 2>/dev/null | while read -r f; do
		[ "$(dpkg-deb -f "$f" Version)" = "$2" ] && echo "$f"
	done | head -1)
	[ -n "$f" ] || die "no .deb for $1 $2 in $DL"
	echo "$f"
}

# ---- unpack -----------------------------------------------------------------------------------
W=$(mktemp -d "$CACHE/.build-$ARCH.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/root" "$W/k" "$W/ir"
KPKG= KVER=
while read -r p v; do
	f=$(deb_of "$p" "$v")
	case $p in
	linux-image-*) KPKG=$p KVER=${p#linux-image-}; dpkg-deb -x "$f" "$W/k" ;;
	*) dpkg-deb -x "$f" "$W/root" ;;
	esac
done <<<"$SET"
[ -n "$KVER" ] && [ -s "$W/k/boot/vmlinuz-$KVER" ] || die "no kernel image in $KPKG"

# ---- initramfs: busybox, userland ELF closure, modules, init -----------------------------------
IR=$W/ir
mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,lib/"$TRIPLET",proc,sys,dev,run,tmp,etc,root,arch}
ln -s ../run "$IR/var" 2>/dev/null || true
install -m 0755 "$W/root/bin/busybox" "$IR/bin/busybox"
# Debian's binaries keep their names; busybox provides everything else (installed at boot).
inroot() { # PATH inside the unpacked packages -> that file, symlinks resolved inside them too
	local p=$1 t n=0
	while [ -L "$W/root$p" ] && [ $n -lt 20 ]; do
		t=$(readlink "$W/root$p")
		case $t in /*) p=$t ;; *) p=$(dirname "$p")/$t ;; esac
		n=$((n + 1))
	done
	[ -f "$W/root$p" ] && echo "$W/root$p"
}
find_one() { # a program in the unpacked packages by name
	local d f
	for d in /usr/sbin /sbin /bin /usr/bin; do
		f=$(inroot "$d/$1") && { echo "$f"; return 0; }
	done
	die "$1 not found in the unpacked packages"
}
install -m 0755 "$(find_one nft)" "$IR/usr/sbin/nft"
install -m 0755 "$(find_one ip)" "$IR/sbin/ip"
install -m 0755 "$(find_one nc.openbsd)" "$IR/usr/bin/nc.openbsd"
[ -d "$W/root/usr/share/iproute2" ] && mkdir -p "$IR/usr/share" && cp -a "$W/root/usr/share/iproute2" "$IR/usr/share/"
# The dynamic loader, then every DT_NEEDED library, transitively.
interp=$(readelf -l "$IR/usr/sbin/nft" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] || die "nft has no program interpreter"
libdirs=("/lib/$TRIPLET" "/usr/lib/$TRIPLET" /lib /usr/lib)
mkdir -p "$IR$(dirname "$interp")"
f=$(inroot "$interp") || die "loader $interp not found"
cp "$f" "$IR$interp"
todo=("$IR/usr/sbin/nft" "$IR/sbin/ip" "$IR/usr/bin/nc.openbsd")
declare -A have=()
while [ ${#todo[@]} -gt 0 ]; do
	elf=${todo[0]}
	todo=("${todo[@]:1}")
	for so in $(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
		[ -n "${have[$so]:-}" ] && continue
		src=
		for d in "${libdirs[@]}"; do src=$(inroot "$d/$so") && break; done
		[ -n "$src" ] || die "$(basename "$elf") needs $so, which no unpacked package has"
		cp "$src" "$IR/lib/$TRIPLET/$so"
		have[$so]=1
		todo+=("$IR/lib/$TRIPLET/$so")
	done
done
# Every program and library must be built for the guest (not picked up from the host).
want_machine=$(readelf -h "$IR/bin/busybox" | sed -n 's/^ *Machine: *//p')
for f in "$IR/usr/sbin/nft" "$IR/sbin/ip" "$IR/usr/bin/nc.openbsd" "$IR$interp" "$IR/lib/$TRIPLET/"*; do
	m=$(readelf -h "$f" 2>/dev/null | sed -n 's/^ *Machine: *//p')
	[ "$m" = "$want_machine" ] || die "${f#"$IR"} is for '$m', not '$want_machine'"
done
# Modules: dependency order from the kernel's own modules.dep (host kmod reads any arch).
depmod -b "$W/k" "$KVER"
MD=$W/k/lib/modules/$KVER
: >"$IR/modules.load"
mkdir -p "$IR/modules"
# CPU-specific crypto (arch/*/crypto, e.g. crc32-arm-ce: a soft dependency of libcrc32c) is left
# out: the emulated CPU may lack the instructions, and the generic module is there.
modprobe -d "$W/k" -S "$KVER" --show-depends -a "${MODULES[@]}" |
	awk '$1 == "insmod" && $2 !~ /\/kernel\/arch\/[^\/]*\/crypto\// && !seen[$2]++ { print $2 }' |
	while read -r ko; do
		cp "$ko" "$IR/modules/"
		basename "$ko" >>"$IR/modules.load"
	done
[ -s "$IR/modules.load" ] || die "no modules found for ${MODULES[*]}"
install -m 0755 "$HERE/init" "$IR/init"
{
	echo "arch $ARCH"
	echo "kernel $KVER"
	echo "$SET" | sed 's/^/package /'
	echo "libraries ${!have[*]}"
	echo "modules $(tr '\n' ' ' <"$IR/modules.load")"
} >"$W/manifest"
cp "$W/manifest" "$IR/manifest"
(cd "$IR" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 >"$W/initramfs.cpio.gz"
cp "$W/k/boot/vmlinuz-$KVER" "$W/kernel"
mkdir -p "$OUT.tmp"
mv "$W/kernel" "$W/initramfs.cpio.gz" "$W/manifest" "$OUT.tmp/"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
# Older builds of this ARCH and .debs no longer in the set go.
for d in "$CACHE/$ARCH"-*; do [ "$d" = "$OUT" ] || rm -rf "$d"; done
keep=$(while read -r p v; do deb_of "$p" "$v"; done <<<"$SET")
for f in "$DL"/*.deb; do grep -qxF "$f" <<<"$keep" || rm -f "$f"; done
log "built $OUT (kernel $KVER, initramfs $(stat -c %s "$OUT/initramfs.cpio.gz") bytes)"
echo "$OUT"

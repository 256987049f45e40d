#!/usr/bin/env bash
# Release build: static musl binaries and the OpenWrt packages (.ipk for opkg, OpenWrt 24.10 and
# earlier; .apk for apk, 25.12 and later) for each OpenWrt architecture, on this machine, without
# Docker or an OpenWrt SDK. Installs what it needs when it is missing: rust-src and llvm-tools
# (rustup), zig and cargo-zigbuild (PyPI, into a venv outside the repo), zopfli (apt, optional).
# The .apk packages need apk-tools 3 and the Japanese catalogue LuCI's po2lmo: both come from
# the OpenWrt userland the tests build (tests/openwrt/userland.sh, from ../shared/openwrt-src),
# or from PATH (MAPE_APK, MAPE_PO2LMO override); without them dist.sh says so and builds the
# rest (in CI, $CI set, their absence is an error).
#
# Usage: scripts/dist.sh [<openwrt-arch>...]     (default: all six; see ARCHES below)
#        scripts/dist.sh --example NAME [<openwrt-arch>...]
#                                           a test tool (examples/NAME.rs) built exactly like the
#                                           router binary, into dist/examples/<openwrt-arch>/NAME;
#                                           nothing else is built or packaged (tests/arch/run.sh)
# Output (dist/ is gitignored; packages and their split: scripts/pkgdef.sh, docs/packaging.md):
#   dist/bin/<openwrt-arch>/mape            stripped static binary
#   dist/symbols/<openwrt-arch>/mape        the same binary before stripping: its symbol table
#                                           is what scripts/size-report.sh measures
#   dist/<package>_<version>-r<release>_<openwrt-arch|all>.ipk
#                                           mape-rs per architecture; mape-rs-map,
#                                           luci-proto-mape, luci-i18n-mape-ja once ("all")
#   dist/feed/<openwrt-arch>/               one feed per architecture: that architecture's
#                                           .ipk and .apk (<package>-<version>.apk, OpenWrt's
#                                           name), Packages, Packages.gz (opkg), packages.adb
#                                           (apk); serve dist/ over HTTP to use them as feeds
#   dist/SIZES.md                           size table (also printed), dist/SHA256SUMS
# Then: scripts/check-dist.sh               (qemu, ELF and package checks)
#
# Env: XBUILD_VENV (default ~/.cache/xbuild-venv), MAPE_DIST_TARGET_DIR (default target/dist,
#      a cargo target dir of its own so the long build does not hold the lock on target/),
#      MAPE_DIST_PANIC (immediate-abort, the default, or abort: see "Size" below),
#      MAPE_APK, MAPE_PO2LMO (tools, see above),
#      MAPE_RELEASE, MAPE_MAINTAINER, SOURCE_DATE_EPOCH (see scripts/ipk.sh).
#
# How (details and pitfalls: the project's cross-build notes): cargo-zigbuild links with zig's
# musl for every target; std is rebuilt from rust-src (-Z build-std, allowed on stable by
# RUSTC_BOOTSTRAP=1, which must then be set for every target) with no std features (no
# backtrace symboliser); +crt-static (the mips targets default to dynamic linking and the
# result segfaults) and link-self-contained=no (otherwise rustc passes bare crt1.o).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$PWD

ZIG_VERSION=0.15.2
ZIGBUILD_VERSION=0.24.1
VENV=${XBUILD_VENV:-$HOME/.cache/xbuild-venv}
export CARGO_TARGET_DIR=${MAPE_DIST_TARGET_DIR:-$ROOT/target/dist}
# Where the sources are built from (see stage_sources): one fixed place per target directory.
STAGE=${MAPE_DIST_STAGE:-$CARGO_TARGET_DIR.src}
DIST=$ROOT/dist

# OpenWrt architecture -> Rust target. One armv7 hard-float binary (VFPv3-D16, no NEON) serves
# both ARM entries. mips/mipsel are soft-float (24Kc has no FPU).
ARCHES=(
	"mipsel_24kc mipsel-unknown-linux-musl"
	"mips_24kc mips-unknown-linux-musl"
	"aarch64_cortex-a53 aarch64-unknown-linux-musl"
	"arm_cortex-a7_neon-vfpv4 armv7-unknown-linux-musleabihf"
	"arm_cortex-a9_vfpv3-d16 armv7-unknown-linux-musleabihf"
	"x86_64 x86_64-unknown-linux-musl"
)
# Size goal for the mipsel .ipk (bytes; issue 13: 300 KB), printed with the size table.
# scripts/check-dist.sh enforces the size reached + 5 % (docs/sizes.md).
GOAL=${MAPE_IPK_GOAL:-300000}

# Cargo features of the router build: the one place they are set. Routers get no plain-Linux
# front end (cargo feature `linux`, default for `cargo install`): `mape generate/up/down` and the
# networkd/iptables renderers stay out of the binary. Keep in step with the feed Makefile.
CARGO_FEATURE_ARGS=(--no-default-features)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'dist.sh: %s\n' "$*" >&2; exit 1; }

target_of() { # <openwrt-arch> -> rust target
	local a ow rt
	for a in "${ARCHES[@]}"; do
		read -r ow rt <<<"$a"
		[ "$ow" = "$1" ] && { echo "$rt"; return 0; }
	done
	return 1
}

# --- what to build -------------------------------------------------------------------------
example=
if [ "${1:-}" = --example ]; then
	[ $# -ge 2 ] && [ -f "$ROOT/examples/$2.rs" ] || die "--example NAME: no examples/${2:-NAME}.rs"
	example=$2
	shift 2
fi
selected=()
all=0
if [ $# -eq 0 ]; then
	all=1
	for a in "${ARCHES[@]}"; do selected+=("${a%% *}"); done
else
	for want in "$@"; do
		target_of "$want" >/dev/null || die "unknown OpenWrt arch '$want' (known: $(for a in "${ARCHES[@]}"; do printf '%s ' "${a%% *}"; done))"
		selected+=("$want")
	done
fi

# --- setup ---------------------------------------------------------------------------------
t_setup=$SECONDS
for tool in cargo rustc rustup python3 tar gzip git install; do
	command -v "$tool" >/dev/null || die "$tool not found"
done
sysroot=$(rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/src/rust/library" ]; then
	log "installing rust-src"
	rustup component add rust-src
fi
venv_ok() {
	[ -x "$VENV/bin/cargo-zigbuild" ] &&
		[ "$("$VENV/bin/cargo-zigbuild" --version 2>/dev/null)" = "cargo-zigbuild $ZIGBUILD_VERSION" ] &&
		[ "$("$VENV/bin/python3" -m ziglang version 2>/dev/null)" = "$ZIG_VERSION" ]
}
if ! venv_ok; then
	log "installing ziglang $ZIG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION into $VENV"
	[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
	"$VENV/bin/pip" install --quiet --disable-pip-version-check \
		"ziglang==$ZIG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
	venv_ok || die "zig/cargo-zigbuild setup in $VENV failed"
fi
# llvm-objcopy (rustup's llvm-tools) drops .pdr from the MIPS binaries: LLVM writes a MIPS
# procedure-descriptor table there that nothing on the router reads (~95 KiB, ~10 KiB gzip'd).
llvm_bin="$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
if [ ! -x "$llvm_bin/llvm-objcopy" ]; then
	log "installing llvm-tools (llvm-objcopy)"
	rustup component add llvm-tools || log "no llvm-tools: .pdr stays in the MIPS binaries, no dist/symbols"
fi
# With llvm-objcopy, cargo links unstripped and llvm-objcopy strips: the unstripped binary is
# kept (dist/symbols) for scripts/size-report.sh, from the very build that is shipped. Without
# it, the linker strips (the profile's strip = true).
if [ -x "$llvm_bin/llvm-objcopy" ]; then
	export CARGO_PROFILE_RELEASE_STRIP=false
fi
# zopfli writes smaller, standard gzip streams (~3% smaller .ipk); scripts/ipk.sh falls back to
# gzip -9n without it.
if [ -z "$example" ] && ! command -v zopfli >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
	log "installing zopfli"
	{ apt-get install -y -qq --no-install-recommends zopfli || { apt-get update -qq && apt-get install -y -qq --no-install-recommends zopfli; }; } >&2 ||
		log "no zopfli: packages are compressed with gzip -9n"
fi
# cargo-zigbuild's wrappers call <venv>/bin/python3 -m ziglang: the whole bin/ goes on PATH.
export PATH="$VENV/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# apk-tools 3 (the .apk packages and apk indexes) and po2lmo (the Japanese catalogue).
root=$ROOT
# shellcheck source=scripts/pkgdef.sh
. "$ROOT/scripts/pkgdef.sh"
[ -n "$example" ] || pkg_find_tools
if [ -z "$example" ] && [ -z "$MAPE_APK" ]; then
	msg="no apk-tools 3: building no .apk and no apk index. Get it with tests/openwrt/userland.sh (builds OpenWrt's userland, apk included, from ../shared/openwrt-src; or set MAPE_OPENWRT_SRC), or build apk-tools 3 from https://gitlab.alpinelinux.org/alpine/apk-tools and set MAPE_APK=/path/to/apk"
	[ -n "${CI:-}" ] && die "$msg"
	log "$msg"
fi
if [ -z "$example" ] && [ -z "$MAPE_PO2LMO" ]; then
	msg="no po2lmo (LuCI's .po compiler): building no luci-i18n-mape-ja. It comes with tests/openwrt/userland.sh (LuCI's modules/luci-base/src: make po2lmo), or set MAPE_PO2LMO"
	[ -n "${CI:-}" ] && die "$msg"
	log "$msg"
fi
t_setup=$((SECONDS - t_setup))

# Size (measured on mipsel; details in the report of issue 5):
#   -C panic=immediate-abort   no panic machinery at all: a panic (there should be none: every
#                              error is a message and exit status 2) kills the process with
#                              SIGTRAP/SIGILL and prints nothing. -15% (gzip'd). Set
#                              MAPE_DIST_PANIC=abort for panic messages (file:line dropped).
#   -C force-unwind-tables=no  no .eh_frame: nothing unwinds. -5%.
# The path remaps keep absolute build paths out of the binaries (same bytes whatever the
# checkout, home or target directory). The sources are built from a staged copy at one fixed
# place (STAGE, below): the flags, and so cargo's cache of std and every dependency for six
# targets, are then the same whatever directory the checkout is in (a CI clone in a new
# directory each run rebuilds only the mape crate).
cargo_home=${CARGO_HOME:-$HOME/.cargo}
flags=(-C target-feature=+crt-static -C link-self-contained=no)
case ${MAPE_DIST_PANIC:-immediate-abort} in
immediate-abort) flags+=(-Z unstable-options -C panic=immediate-abort -C force-unwind-tables=no) ;;
abort) flags+=(-Z location-detail=none) ;;
*) die "MAPE_DIST_PANIC must be immediate-abort or abort" ;;
esac
flags+=(
	"--remap-path-prefix=$STAGE=/mape-rs" "--remap-path-prefix=$cargo_home=/cargo"
	"--remap-path-prefix=$sysroot=/rust" "--remap-path-prefix=$CARGO_TARGET_DIR=/target"
)
# Per target, added to the flags above:
#   mips*: -C relocation-model=static. The MIPS binaries are not position-independent anyway
#          (static, ELF type EXEC: these targets have no static-pie), but the targets' default
#          relocation model, pic, still compiles every call as a GOT load + jalr and every
#          function with a $gp set-up. Static code calls with jal.
target_flags() { # <rust target>
	case $1 in
	mips*) echo "-C relocation-model=static" ;;
	esac
}
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; echo "${flags[*]}")
export CARGO_ENCODED_RUSTFLAGS
unset CARGO_BUILD_TARGET RUSTFLAGS
# std is rebuilt with optimize_for_size: core and alloc pick their small variants (sorts, integer
# formatting): -6% (binary), behaviour the same.
BUILD_STD_ARGS=(-Z build-std=std,panic_abort -Z build-std-features=optimize_for_size)

# --- build ---------------------------------------------------------------------------------
# The staged copy: the files git knows (tracked, and untracked but not ignored: a dirty tree
# builds as it is), modification times kept so cargo sees what changed since the last build.
stage_sources() {
	local list
	list=$(mktemp)
	if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git -C "$ROOT" ls-files -z --cached --others --exclude-standard >"$list"
	else # a source tarball: everything but build output
		(cd "$ROOT" && find . -path ./target -prune -o -path ./dist -prune -o -type f -print0) >"$list"
	fi
	rm -rf "$STAGE" && mkdir -p "$STAGE"
	tar -C "$ROOT" --null -T "$list" -cf - | tar -C "$STAGE" -xpf -
	rm -f "$list"
}
stage_sources
MANIFEST=(--manifest-path "$STAGE/Cargo.toml")
declare -A built_secs=()
triples=()
for want in "${selected[@]}"; do
	t=$(target_of "$want")
	case " ${triples[*]-} " in *" $t "*) ;; *) triples+=("$t") ;; esac
done
if [ -n "$example" ]; then
	# A separate cargo run: building an example resolves the dev-dependencies too, and their
	# features must not reach the shipped binary.
	for want in "${selected[@]}"; do
		t=$(target_of "$want")
		log "building example $example for $t"
		cargo zigbuild "${MANIFEST[@]}" --release --locked --example "$example" --target "$t" "${CARGO_FEATURE_ARGS[@]}" \
			-Z build-std=std,panic_abort -Z build-std-features=
		install -D -m 0755 "$CARGO_TARGET_DIR/$t/release/examples/$example" "$DIST/examples/$want/$example"
	done
	exit 0
fi
for t in "${triples[@]}"; do
	log "building $t"
	s=$SECONDS
	# shellcheck disable=SC2207
	tflags=("${flags[@]}" $(target_flags "$t"))
	CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; echo "${tflags[*]}") \
		cargo zigbuild "${MANIFEST[@]}" --release --locked --bin mape --target "$t" "${CARGO_FEATURE_ARGS[@]}" "${BUILD_STD_ARGS[@]}"
	built_secs[$t]=$((SECONDS - s))
done

# --- package -------------------------------------------------------------------------------
if [ "$all" = 1 ]; then
	rm -rf "$DIST/bin" "$DIST/symbols" "$DIST/feed" "$DIST"/*.ipk "$DIST/SIZES.md" "$DIST/SHA256SUMS"
fi
mkdir -p "$DIST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The architecture-independent packages, once.
lmo=""
if [ -n "$MAPE_PO2LMO" ]; then
	lmo=$work/mape.ja.lmo
	"$MAPE_PO2LMO" "$ROOT/po/ja/mape.po" "$lmo" || die "po2lmo po/ja/mape.po failed"
fi
noarch=(mape-rs-map luci-proto-mape)
if [ -n "$lmo" ]; then noarch+=(luci-i18n-mape-ja); else rm -f "$DIST"/luci-i18n-mape-ja_*_all.ipk; fi
mkdir -p "$work/all"
for p in "${noarch[@]}"; do
	rm -f "$DIST/${p}"_*_all.ipk
	MAPE_LMO=$lmo scripts/ipk.sh - all "$DIST" "$p" >/dev/null
	[ -n "$MAPE_APK" ] && MAPE_LMO=$lmo scripts/apk.sh - all "$work/all" "$p" >/dev/null
done
for want in "${selected[@]}"; do
	t=$(target_of "$want")
	rm -f "$DIST"/mape-rs_*_"$want".ipk
	install -D -m 0755 "$CARGO_TARGET_DIR/$t/release/mape" "$DIST/bin/$want/mape"
	rm -rf "$DIST/symbols/$want"
	if [ -x "$llvm_bin/llvm-objcopy" ]; then
		install -D -m 0755 "$CARGO_TARGET_DIR/$t/release/mape" "$DIST/symbols/$want/mape"
		"$llvm_bin/llvm-objcopy" --strip-all --remove-section=.pdr --remove-section=.comment "$DIST/bin/$want/mape"
	fi
	scripts/ipk.sh "$DIST/bin/$want/mape" "$want" "$DIST" >/dev/null
	# The feed of this architecture: its packages (hard links where possible) and indexes.
	feed=$DIST/feed/$want
	rm -rf "$feed" && mkdir -p "$feed"
	for f in "$DIST"/mape-rs_*_"$want".ipk "$DIST"/*_all.ipk "$work"/all/*.apk; do
		[ -f "$f" ] && { ln -f "$f" "$feed/" 2>/dev/null || cp "$f" "$feed/"; }
	done
	[ -n "$MAPE_APK" ] && scripts/apk.sh "$DIST/bin/$want/mape" "$want" "$feed" >/dev/null
	scripts/feed.sh "$feed" >/dev/null
done

# --- report --------------------------------------------------------------------------------
kib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1024 }'; }
size() { if [ -f "$1" ]; then stat -c %s "$1"; else echo -; fi; }
pkgversion=$(ls "$DIST"/mape-rs-map_*_all.ipk | sed 's/.*mape-rs-map_\(.*\)_all\.ipk$/\1/')
{
	echo "| OpenWrt arch | Rust target | binary (bytes) | binary (KiB) | .ipk (bytes) | .ipk (KiB) | .apk (bytes) | .apk (KiB) | build (s) |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
	for a in "${ARCHES[@]}"; do
		read -r ow rt <<<"$a"
		[ -f "$DIST/bin/$ow/mape" ] || continue
		b=$(size "$DIST/bin/$ow/mape")
		p=$(size "$DIST/mape-rs_${pkgversion}_$ow.ipk")
		k=$(size "$DIST/feed/$ow/mape-rs-$pkgversion.apk")
		echo "| $ow | $rt | $b | $(kib "$b") | $p | $(kib "$p") | $k | $([ "$k" = - ] && echo - || kib "$k") | ${built_secs[$rt]:--} |"
	done
	echo
	echo "| architecture-independent package | .ipk (bytes) | .apk (bytes) |"
	echo "|---|---:|---:|"
	first=$(ls -d "$DIST"/feed/*/ 2>/dev/null | head -1)
	for p in mape-rs-map luci-proto-mape luci-i18n-mape-ja; do
		echo "| $p | $(size "$DIST/${p}_${pkgversion}_all.ipk") | $(size "${first}$p-$pkgversion.apk") |"
	done
	echo
	m=$(ls "$DIST"/mape-rs_*_mipsel_24kc.ipk 2>/dev/null || true)
	if [ -n "$m" ]; then
		p=$(stat -c %s "$m")
		if [ "$p" -le "$GOAL" ]; then v="within"; else v="OVER"; fi
		echo "mipsel_24kc .ipk: $p bytes, $v the goal of $GOAL bytes."
	fi
	echo
	echo "rustc $(rustc -V | cut -d' ' -f2), zig $ZIG_VERSION, cargo-zigbuild $ZIGBUILD_VERSION," \
		"$([ -n "$MAPE_APK" ] && "$MAPE_APK" --version | cut -d, -f1 || echo "no apk-tools");" \
		"setup ${t_setup}s, total $((SECONDS))s."
} >"$DIST/SIZES.md"
(cd "$DIST" && sha256sum bin/*/mape ./*.ipk $(find feed -type f | sort) | sed 's| \./| |' >SHA256SUMS)
cat "$DIST/SIZES.md"

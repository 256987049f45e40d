#!/usr/bin/env bash
# Checks what scripts/dist.sh produced in dist/:
#   - every binary runs under qemu user emulation (-cpu 24Kc for MIPS, cortex-a7/-a9 for ARM,
#     cortex-a53 for aarch64; x86_64 natively) and prints exactly what the host build prints
#     (stdout, stderr, exit status) for `mape calc --json` on v6plus, OCN, BIGLOBE, NURO
#     prefixes, an RFC 7597 explicit --rule, bad input (status 2), `mape rules`, and the
#     netifd handler's dry run (`mape netifd '' dump`, `setup ... --dry-run`, `teardown ...`);
#   - ELF: static (no interpreter, no NEEDED), class, endianness, machine, float ABI
#     (mips: o32 soft-float; armv7: EABI5 hard-float, VFP register arguments);
#   - each .ipk (mape-rs per architecture; mape-rs-map, luci-proto-mape, luci-i18n-mape-ja):
#     a gzip'd tar (not ar) of ./debian-binary ./data.tar.gz ./control.tar.gz, the tree of
#     scripts/pkgdef.sh with every file equal to its source, modes, the control fields, the
#     maintainer scripts;
#   - each .apk, read with the real `apk adbdump` (tests/pkg/apkmeta.py): metadata, the same
#     files as its .ipk, /lib/apk/packages/<name>.list, the scripts mapped as OpenWrt's
#     package-pack.mk maps them;
#   - each feed (dist/feed/<arch>): its packages, Packages(.gz), packages.adb;
#   - reproducible: .ipk, .apk and the feed indexes built twice give the same bytes;
#   - the feed Makefile agrees with scripts/pkgdef.sh: GNU make runs its own recipes against
#     tests/pkg/sdk-stub (Build/Prepare, every Package/<name>/install: same files and modes as
#     the prebuilt packages; DEPENDS, PKGARCH, CONFLICTS, PROVIDES, scripts, licence files);
#   - the maintainer scripts against stub ubus/nft/uci commands and OpenWrt's real jsonfilter
#     (restart only when netifd lacks the protocol or one of its options; once per transaction);
#   - the size of the mipsel binary and .ipk: each against a hard limit, the size reached in
#     issue 13 + 5 % (MAPE_BIN_LIMIT, MAPE_IPK_LIMIT: docs/sizes.md), and, reported only, the
#     .ipk against the 300 KB goal (MAPE_IPK_GOAL).
# Prints one `ok`/`FAIL` line per check and `N passed, M failed` at the end; exits 1 on failure.
#
# Usage: scripts/check-dist.sh            (after scripts/dist.sh; installs qemu-user-static,
#                                           file and binutils with apt-get when missing)
# Env:   MAPE_BIN_LIMIT, MAPE_IPK_LIMIT, MAPE_IPK_GOAL (bytes), MAPE_RELEASE, MAPE_DIST_TARGET_DIR
set -uo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=$ROOT/dist
# mipsel_24kc sizes reached (issue 13, docs/sizes.md); the limits are these + 5 %. When a
# change makes them smaller for good, lower them here and in docs/sizes.md.
REACHED_BIN=623796
REACHED_IPK=293533
GOAL=${MAPE_IPK_GOAL:-300000}                        # issue 13's goal for the .ipk: reported only
LIMIT=${MAPE_IPK_LIMIT:-$((REACHED_IPK * 105 / 100))}     # .ipk hard limit: fails the check
BIN_LIMIT=${MAPE_BIN_LIMIT:-$((REACHED_BIN * 105 / 100))} # binary hard limit: fails the check
export CARGO_TARGET_DIR=${MAPE_DIST_TARGET_DIR:-$ROOT/target/dist}

# shellcheck source=scripts/checks.sh
. scripts/checks.sh

# OpenWrt arch | qemu binary | -cpu | ELF class | data | machine
ARCHES=(
	"mipsel_24kc qemu-mipsel-static 24Kc ELF32 little MIPS"
	"mips_24kc qemu-mips-static 24Kc ELF32 big MIPS"
	"aarch64_cortex-a53 qemu-aarch64-static cortex-a53 ELF64 little AArch64"
	"arm_cortex-a7_neon-vfpv4 qemu-arm-static cortex-a7 ELF32 little ARM"
	"arm_cortex-a9_vfpv3-d16 qemu-arm-static cortex-a9 ELF32 little ARM"
	"x86_64 - - ELF64 little X86-64"
)

# --- tools ---------------------------------------------------------------------------------
need=()
command -v qemu-mipsel-static >/dev/null || need+=(qemu-user-static)
command -v file >/dev/null || need+=(file)
command -v readelf >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
	echo "== installing ${need[*]}" >&2
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >&2 ||
		{ bad "install ${need[*]}"; finish; }
fi

version=$(awk '/^\[/ { p = ($0 == "[package]"); next } p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
pkgversion="$version-r${MAPE_RELEASE:-1}"

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# --- host reference build ------------------------------------------------------------------
echo "== host build (reference output)" >&2
if ! cargo build --release --locked --bin mape >&2; then
	bad "host build"
	finish
fi
HOST=$CARGO_TARGET_DIR/release/mape

# --- cases ---------------------------------------------------------------------------------
# Every binary runs from the same path ($W/run/mape): the dry run prints its own path.
RFC_RULE='type=map-e,ipv6prefix=2001:db8::,prefix6len=40,ipv4prefix=192.0.2.0,prefix4len=24,ealen=16,offset=6,br=2001:db8:ffff::1'
CASES=(
	"calc-v6plus|calc --json 240b:10:3f6c:d400::/56"
	"calc-v6plus-addr|calc --json 240b:12:3456:7800:a:100:2000:3000"
	"calc-ocn|calc --json 2400:4050:1234:5600::/56"
	"calc-biglobe|calc --json 2404:7a81:1122:3300::/56"
	"calc-biglobe38|calc --json 2404:7a82:123:4500::/56"
	"calc-nuro|calc --json 240d:f:1234:5600::/56"
	"calc-rfc-rule|calc --json --rule $RFC_RULE 2001:db8:12:3400::/56"
	"calc-text|calc 240b:10:3f6c:d400::/56"
	"calc-bad|calc --json not-a-prefix"
	"rules|rules"
	"version|--version"
)
# What the host build must say for some of them (so "same as host" is not "same garbage").
declare -A EXPECT=(
	[calc-v6plus]='"ipv4":"106.72.63.108"'
	[calc-v6plus-addr]='"ipv4":"14.8.52.86"'
	[calc-ocn]='"ipv4":"153.240.72.209"'
	[calc-biglobe]='"ipv4":"133.201.17.34"'
	[calc-biglobe38]='"ipv4":"125.196.209.35"'
	[calc-nuro]='"ipv4":"219.104.146.52"'
	[calc-rfc-rule]='"ipv4":"192.0.2.18"'
)
declare -A EXPECT_RC=([calc-bad]=2)

NETIFD=0
if "$HOST" netifd --help >/dev/null 2>&1; then
	NETIFD=1
	cat >"$W/wan6-status.json" <<'EOF'
{"up":true,"pending":false,"available":true,"autostart":true,"dynamic":false,"l3_device":"eth1","proto":"dhcpv6","device":"eth1",
 "ipv6-address":[{"address":"240b:10:3f6c:d400::1","mask":64}],
 "ipv6-prefix":[{"address":"240b:10:3f6c:d400::","mask":56,"preferred":3600,"valid":7200,"class":"wan6","assigned":{}}],
 "route":[],"dns-server":[],"data":{}}
EOF
	CFG='{"proto":"mape","tunlink":"wan6","zone":"wan"}'
	CASES+=(
		"netifd-dump|netifd '' dump"
		"netifd-setup|netifd mape setup wanmap $CFG --dry-run --link-mtu 1500 --tunlink-status $W/wan6-status.json"
		"netifd-teardown|netifd mape teardown wanmap $CFG --dry-run"
	)
	EXPECT[netifd-setup]='"local":"240b:10:3f6c:d400:6a:483f:6c00:d400"'
fi

# run <name> <runner...> : runs case $case_args with the binary at $W/run/mape
run_case() { # <outprefix> <args-string> <runner...>
	local out=$1 args=$2
	shift 2
	local -a argv
	# Split on '|'-free spaces, keeping JSON config and the empty '' argument intact.
	eval "argv=($args)"
	timeout -s KILL 60 "$@" "$W/run/mape" "${argv[@]}" >"$out.stdout" 2>"$out.stderr" </dev/null
	echo $? >"$out.rc"
}
quote_cfg() { # turn the case string into an eval-safe one: quote the JSON
	local s=$1
	s=${s//$CFG/\'$CFG\'}
	printf '%s' "$s"
}

mkdir -p "$W/run" "$W/host"
install -m 0755 "$HOST" "$W/run/mape"
for c in "${CASES[@]}"; do
	name=${c%%|*}
	args=$(quote_cfg "${c#*|}")
	run_case "$W/host/$name" "$args"
	rc=$(cat "$W/host/$name.rc")
	want_rc=${EXPECT_RC[$name]:-0}
	if [ "$rc" != "$want_rc" ]; then
		bad "host: mape $name exits $rc (want $want_rc): $(head -c 300 "$W/host/$name.stderr")"
	elif [ -n "${EXPECT[$name]:-}" ] && ! grep -qF -- "${EXPECT[$name]}" "$W/host/$name.stdout"; then
		bad "host: mape $name lacks ${EXPECT[$name]}"
	else
		ok "host: mape $name (exit $rc)"
	fi
done
if [ "$NETIFD" = 0 ]; then
	echo "note: the host build has no 'mape netifd': netifd dry-run comparison skipped" >&2
fi

# --- per architecture ----------------------------------------------------------------------
for a in "${ARCHES[@]}"; do
	read -r arch qemu cpu class data machine <<<"$a"
	bin=$DIST/bin/$arch/mape
	if [ ! -f "$bin" ]; then
		bad "$arch: $bin missing (run scripts/dist.sh)"
		continue
	fi

	# ELF
	f=$(file -b "$bin")
	hdr=$(readelf -h "$bin" 2>&1)
	attrs=$(readelf -A "$bin" 2>&1)
	if [[ $f == *"statically linked"* || $f == *"static-pie linked"* ]] && [[ $f != *dynamic* ]] &&
		! readelf -l "$bin" | grep -q INTERP && ! readelf -d "$bin" 2>/dev/null | grep -q NEEDED; then
		ok "$arch: static ($f)"
	else
		bad "$arch: not static: $f"
	fi
	if grep -q "Class: *$class" <<<"$hdr" && grep -q "Data: .*$data endian" <<<"$hdr"; then
		ok "$arch: $class $data-endian"
	else
		bad "$arch: class/endianness: $(grep -E 'Class|Data' <<<"$hdr" | tr -s ' ' | tr '\n' ';')"
	fi
	case $machine in
	MIPS)
		if grep -q "Machine: *MIPS R3000" <<<"$hdr" && grep -q "Flags:.*o32.*mips32r2" <<<"$hdr" &&
			grep -q "FP ABI: Soft float" <<<"$attrs"; then
			ok "$arch: MIPS32r2 o32, FP ABI soft float"
		else
			bad "$arch: MIPS ABI: $(grep -E 'Machine|Flags' <<<"$hdr" | tr -s ' ' | tr '\n' ';') $(grep 'FP ABI' <<<"$attrs")"
		fi
		;;
	ARM)
		if grep -q "Machine: *ARM" <<<"$hdr" && grep -q "Flags:.*Version5 EABI, hard-float ABI" <<<"$hdr" &&
			grep -q "Tag_ABI_VFP_args: VFP registers" <<<"$attrs" && grep -q "Tag_CPU_arch: v7" <<<"$attrs"; then
			ok "$arch: ARMv7 EABI5 hard-float ($(grep -E 'Tag_FP_arch' <<<"$attrs" | tr -s ' '))"
		else
			bad "$arch: ARM ABI: $(grep -E 'Flags' <<<"$hdr" | tr -s ' ') $(grep -E 'Tag_ABI_VFP_args|Tag_CPU_arch:' <<<"$attrs" | tr -s ' ' | tr '\n' ';')"
		fi
		;;
	AArch64)
		if grep -q "Machine: *AArch64" <<<"$hdr"; then ok "$arch: AArch64"; else bad "$arch: machine"; fi
		;;
	X86-64)
		if grep -q "Machine: *Advanced Micro Devices X86-64" <<<"$hdr"; then ok "$arch: x86-64"; else bad "$arch: machine"; fi
		;;
	esac

	# Same output as the host build.
	runner=()
	[ "$qemu" != "-" ] && runner=("$qemu" -cpu "$cpu")
	install -m 0755 "$bin" "$W/run/mape"
	mkdir -p "$W/$arch"
	for c in "${CASES[@]}"; do
		name=${c%%|*}
		args=$(quote_cfg "${c#*|}")
		run_case "$W/$arch/$name" "$args" "${runner[@]}"
		what=""
		cmp -s "$W/host/$name.stdout" "$W/$arch/$name.stdout" || what+=" stdout"
		cmp -s "$W/host/$name.stderr" "$W/$arch/$name.stderr" || what+=" stderr"
		cmp -s "$W/host/$name.rc" "$W/$arch/$name.rc" || what+=" exit($(cat "$W/$arch/$name.rc"))"
		if [ -z "$what" ]; then
			ok "$arch: mape $name same as host"
		else
			bad "$arch: mape $name differs from host in$what: $(head -c 200 "$W/$arch/$name.stderr")"
		fi
	done
done

# --- packages ------------------------------------------------------------------------------
# What each package must hold and declare: scripts/pkgdef.sh (the description ipk.sh and apk.sh
# build from); the checks below also compare the files with their sources.
root=$ROOT
# shellcheck source=scripts/pkgdef.sh
. scripts/pkgdef.sh
pkg_find_tools # MAPE_APK, MAPE_PO2LMO: empty when absent
if [ -z "$MAPE_APK" ] || [ -z "$MAPE_PO2LMO" ]; then
	what="$([ -z "$MAPE_APK" ] && echo "apk-tools 3 ")$([ -z "$MAPE_PO2LMO" ] && echo "po2lmo")"
	if [ -n "${CI:-}" ]; then
		bad "tools for the .apk and i18n checks missing in CI: $what"
	else
		echo "note: no $what (tests/openwrt/userland.sh skipped): the .apk and luci-i18n-mape-ja checks are skipped" >&2
	fi
fi
LICENSE_WANT=$(pkg_cargo_field license)
DEPENDS_WANT="kmod-ip6-tunnel, kmod-nft-nat, nftables, ubus"
lmo_fresh=""
if [ -n "$MAPE_PO2LMO" ]; then
	lmo_fresh=$W/mape.ja.lmo
	"$MAPE_PO2LMO" po/ja/mape.po "$lmo_fresh" || bad "po2lmo po/ja/mape.po"
fi

# unpack_ipk <ipk> <dir>: outer, data, control; false (with a FAIL line) if the format is wrong.
unpack_ipk() {
	local ipk=$1 x=$2 tag=$3
	rm -rf "$x" && mkdir -p "$x/outer" "$x/data" "$x/control"
	if cmp -s -n 7 "$ipk" <(printf '!<arch>'); then
		bad "$tag: .ipk is an ar archive (opkg wants a gzip'd tar)"
		return 1
	fi
	if gzip -t "$ipk" 2>/dev/null && [ "$(tar tzf "$ipk" | tr '\n' ' ')" = "./debian-binary ./data.tar.gz ./control.tar.gz " ]; then
		ok "$tag: a gzip'd tar of ./debian-binary ./data.tar.gz ./control.tar.gz"
	else
		bad "$tag: outer archive: $(tar tzf "$ipk" 2>&1 | tr '\n' ' ')"
		return 1
	fi
	tar xzf "$ipk" -C "$x/outer"
	check "$tag: debian-binary is 2.0" test "$(cat "$x/outer/debian-binary")" = "2.0"
	tar xzf "$x/outer/data.tar.gz" -C "$x/data" && tar xzf "$x/outer/control.tar.gz" -C "$x/control"
}

# check_ipk <ipk> <package> <openwrt-arch>
check_ipk() {
	local ipk=$1 name=$2 arch=$3 x tag listing p same f s want_ctl
	tag="$arch $(basename "$ipk")"
	[ -f "$ipk" ] || { bad "$tag: missing"; return; }
	x=$W/ipk-$arch-$name
	unpack_ipk "$ipk" "$x" "$tag" || return
	pkg_meta "$name"

	# data
	pkg_expected_files "$name" >"$W/expected-files"
	(cd "$x/data" && find . \( -type f -o -type l \) | sort) >"$W/got-files"
	if cmp -s "$W/expected-files" "$W/got-files"; then
		ok "$tag: data tree as scripts/pkgdef.sh says ($(wc -l <"$W/got-files") files)"
	else
		bad "$tag: data tree differs: $(diff "$W/expected-files" "$W/got-files" | grep '^[<>]' | tr '\n' ' ')"
	fi
	same=1
	while read -r p; do
		case $name/$p in
		mape-rs/./usr/sbin/mape) s=$DIST/bin/$arch/mape ;;
		mape-rs/.$PKG_LICENSE_DIR/*) s=$(basename "$p") ;;
		mape-rs-map/*) s=compat/map/$p ;;
		luci-i18n-mape-ja/.$PKG_LMO_PATH) s=$lmo_fresh ;;
		luci-i18n-mape-ja/./etc/uci-defaults/luci-i18n-mape-ja) s="" ;;
		*) s=files/$p ;;
		esac
		[ -z "$s" ] && continue
		cmp -s "$s" "$x/data/$p" || { same=0; echo "  differs from $s: $p" >&2; }
	done <"$W/got-files"
	check "$tag: every file is its source (binary, files/, compat/, LICENSE-*, po2lmo of po/ja/mape.po)" test "$same" = 1
	listing=$(tar tvzf "$x/outer/data.tar.gz")
	check "$tag: every data entry owned by 0/0" test -z "$(awk '$2 != "0/0"' <<<"$listing")"
	check "$tag: directories and executables 0755, other files 0644" \
		test -z "$(awk '$1 !~ /^(drwxr-xr-x|-rwxr-xr-x|-rw-r--r--|lrwxrwxrwx)$/' <<<"$listing")"
	case $name in
	mape-rs)
		check "$tag: /usr/sbin/mape mode 0755" grep -q '^-rwxr-xr-x 0/0 .* \./usr/sbin/mape$' <<<"$listing"
		if [ -f files/lib/netifd/proto/mape.sh ]; then
			check "$tag: /lib/netifd/proto/mape.sh mode 0755" grep -q '^-rwxr-xr-x 0/0 .* \./lib/netifd/proto/mape\.sh$' <<<"$listing"
		else
			bad "$tag: files/lib/netifd/proto/mape.sh does not exist yet (the handler entry point)"
		fi
		check "$tag: no LuCI file (they are luci-proto-mape's)" sh -c '! grep -q "\./www/\|luci-proto-mape.json" "$1"' _ "$W/got-files"
		;;
	mape-rs-map)
		check "$tag: /lib/netifd/proto/map.sh mode 0755" grep -q '^-rwxr-xr-x 0/0 .* \./lib/netifd/proto/map\.sh$' <<<"$listing"
		;;
	luci-proto-mape)
		check "$tag: LuCI protocol/mape.js mode 0644" grep -q '^-rw-r--r-- 0/0 .* \./www/luci-static/resources/protocol/mape\.js$' <<<"$listing"
		;;
	luci-i18n-mape-ja)
		check "$tag: uci-defaults registers luci.languages.ja as luci.mk does" \
			test "$(cat "$x/data/etc/uci-defaults/luci-i18n-mape-ja")" = "uci set luci.languages.ja='$PKG_LANG_JA'; uci commit luci"
		;;
	esac

	# control
	local ctl=$x/control/control fields_ok=1 why="" kv k v
	field() { sed -n "s/^$1: //p" "$ctl"; }
	for kv in "Package=$name" "Version=$pkgversion" "Architecture=$(pkg_arch "$name" "$arch")" \
		"Section=$PKG_SECTION" "Depends=$PKG_DEPENDS" "Conflicts=$PKG_CONFLICTS" "Replaces=$PKG_REPLACES" \
		"Provides=$PKG_PROVIDES" "License=$LICENSE_WANT" "LicenseFiles=LICENSE-MIT LICENSE-APACHE"; do
		k=${kv%%=*}
		v=${kv#*=}
		[ "$(field "$k")" = "$v" ] || { fields_ok=0; why+=" $k='$(field "$k")'"; }
	done
	for k in Maintainer Description; do
		[ -n "$(field "$k")" ] || { fields_ok=0; why+=" no $k"; }
	done
	[ "$(field Installed-Size)" = "$(gzip -dc "$x/outer/data.tar.gz" | wc -c)" ] || { fields_ok=0; why+=" Installed-Size"; }
	if [ "$fields_ok" = 1 ]; then ok "$tag: control fields"; else bad "$tag: control fields:$why"; fi
	case $name in
	mape-rs) check "$tag: Depends = $DEPENDS_WANT" test "$(field Depends)" = "$DEPENDS_WANT" ;;
	mape-rs-map) check "$tag: Conflicts and Provides map, no Replaces (opkg refuses it next to OpenWrt's map)" \
		test "$(field Conflicts)/$(field Replaces)/$(field Provides)" = "map//map" ;;
	luci-proto-mape) check "$tag: Depends mape-rs, luci-base" test "$(field Depends)" = "mape-rs, luci-base" ;;
	luci-i18n-mape-ja) check "$tag: Depends luci-proto-mape" test "$(field Depends)" = "luci-proto-mape" ;;
	esac
	want_ctl="./control ./postinst ./prerm "
	for s in postinst prerm; do
		[ -n "$(pkg_script "$name" "$s")" ] && want_ctl+="./$s-pkg "
	done
	want_ctl=$(tr ' ' '\n' <<<"$want_ctl" | sed '/^$/d' | sort | tr '\n' ' ')
	check "$tag: control.tar = $want_ctl(no conffiles)" test "$(cd "$x/control" && find . -type f | sort | tr '\n' ' ')" = "$want_ctl"
	case $name in
	mape-rs | mape-rs-map)
		check "$tag: postinst-pkg is packaging/postinst" cmp "$x/control/postinst-pkg" packaging/postinst
		check "$tag: prerm-pkg is packaging/prerm" cmp "$x/control/prerm-pkg" packaging/prerm
		;;
	luci-proto-mape) check "$tag: postinst-pkg is packaging/luci/postinst" cmp "$x/control/postinst-pkg" packaging/luci/postinst ;;
	luci-i18n-mape-ja) check "$tag: postinst-pkg is packaging/luci/i18n-postinst" cmp "$x/control/postinst-pkg" packaging/luci/i18n-postinst ;;
	esac
	check "$tag: maintainer scripts executable, sh -n clean" \
		sh -c 'for s in "$1"/postinst* "$1"/prerm*; do test -x "$s" && sh -n "$s" || exit 1; done' _ "$x/control"
}

# check_apk <apk> <package> <openwrt-arch>: against the same package's .ipk (unpacked by
# check_ipk), read with the real apk (tests/pkg/apkmeta.py).
check_apk() {
	local apk=$1 name=$2 arch=$3 x line aarch provides=""
	x=$W/ipk-$arch-$name
	[ -f "$apk" ] || { bad "$arch $(basename "$apk"): missing"; return; }
	[ -d "$x/data" ] || { bad "$arch $(basename "$apk"): no .ipk to compare with"; return; }
	pkg_meta "$name"
	aarch=$(pkg_arch "$name" "$arch")
	[ "$aarch" = all ] && aarch=noarch
	for p in $(tr -d ',' <<<"$PKG_PROVIDES"); do provides+="${provides:+ }$p=$pkgversion"; done
	while IFS= read -r line; do
		case $line in
		"ok   "*) ok "${line#ok   }" ;;
		*) bad "${line#FAIL }" ;;
		esac
	done < <(python3 tests/pkg/apkmeta.py --apk-tool "$MAPE_APK" --apk "$apk" --ipk-data "$x/data" \
		--ipk-control "$x/control" --name "$name" --version "$pkgversion" --arch "$aarch" \
		--depends "$(tr -d ',' <<<"$PKG_DEPENDS")" --provides "$provides" --license "$LICENSE_WANT" 2>&1)
}

for a in "${ARCHES[@]}"; do
	read -r arch _ <<<"$a"
	feed=$DIST/feed/$arch
	for name in "${PKG_NAMES[@]}"; do
		[ "$name" = luci-i18n-mape-ja ] && [ -z "$MAPE_PO2LMO" ] && continue
		pkg_meta "$name"
		if [ "$PKG_ARCHKIND" = target ]; then
			ipk=$DIST/${name}_${pkgversion}_${arch}.ipk
		else
			ipk=$DIST/${name}_${pkgversion}_all.ipk
		fi
		# the architecture-independent ones in full once, then only that the feed has them
		if [ "$PKG_ARCHKIND" = target ] || [ "$arch" = mipsel_24kc ]; then
			check_ipk "$ipk" "$name" "$arch"
			[ -n "$MAPE_APK" ] && check_apk "$feed/$name-$pkgversion.apk" "$name" "$arch"
		fi
		check "$arch feed: $(basename "$ipk") is the one in dist/" cmp "$ipk" "$feed/$(basename "$ipk")"
		if [ -n "$MAPE_APK" ] && [ "$PKG_ARCHKIND" = all ]; then
			check "$arch feed: $name-$pkgversion.apk is the architecture-independent one" \
				cmp "$feed/$name-$pkgversion.apk" "$DIST/feed/mipsel_24kc/$name-$pkgversion.apk"
		fi
	done
	check "$arch feed: Packages and Packages.gz (same content)" \
		sh -c 'test -s "$1/Packages" && gzip -dc "$1/Packages.gz" | cmp -s - "$1/Packages"' _ "$feed"
	check "$arch feed: Packages has one entry per .ipk, each with Filename, Size and SHA256sum" \
		sh -c 'n=$(ls "$1"/*.ipk | wc -l); [ "$(grep -c "^Package: " "$1/Packages")" = "$n" ] &&
			[ "$(grep -c "^Filename: " "$1/Packages")" = "$n" ] && [ "$(grep -c "^SHA256sum: " "$1/Packages")" = "$n" ] &&
			[ "$(grep -c "^Size: " "$1/Packages")" = "$n" ]' _ "$feed"
	[ -n "$MAPE_APK" ] && check "$arch feed: packages.adb (apk mkndx)" test -s "$feed/packages.adb"
done

# Reproducible: packaging the same inputs again gives the same bytes.
if [ -f "$DIST/bin/mipsel_24kc/mape" ]; then
	mkdir -p "$W/again"
	# Same SOURCE_DATE_EPOCH as the packages in dist/ (a commit since then would change it).
	epoch=$(tar --utc --full-time -tvzf "$DIST/mape-rs_${pkgversion}_mipsel_24kc.ipk" 2>/dev/null |
		awk 'NR == 1 { print $4 " " $5 }')
	epoch=$(date -u -d "$epoch" +%s 2>/dev/null || echo 0)
	SOURCE_DATE_EPOCH=$epoch scripts/ipk.sh "$DIST/bin/mipsel_24kc/mape" mipsel_24kc "$W/again" >/dev/null 2>&1
	check "ipk.sh is reproducible (mipsel_24kc packaged twice: same bytes)" \
		cmp "$W/again/mape-rs_${pkgversion}_mipsel_24kc.ipk" "$DIST/mape-rs_${pkgversion}_mipsel_24kc.ipk"
	if [ -n "$MAPE_APK" ]; then
		SOURCE_DATE_EPOCH=$epoch scripts/apk.sh "$DIST/bin/mipsel_24kc/mape" mipsel_24kc "$W/again" >/dev/null 2>&1
		check "apk.sh is reproducible (mipsel_24kc mape-rs packaged twice: same bytes)" \
			cmp "$W/again/mape-rs-$pkgversion.apk" "$DIST/feed/mipsel_24kc/mape-rs-$pkgversion.apk"
		if [ -n "$lmo_fresh" ]; then
			SOURCE_DATE_EPOCH=$epoch MAPE_LMO=$lmo_fresh scripts/apk.sh - all "$W/again" luci-i18n-mape-ja >/dev/null 2>&1
			check "apk.sh is reproducible (luci-i18n-mape-ja twice: same bytes)" \
				cmp "$W/again/luci-i18n-mape-ja-$pkgversion.apk" "$DIST/feed/mipsel_24kc/luci-i18n-mape-ja-$pkgversion.apk"
		fi
	fi
	rm -rf "$W/feed-again" && cp -a "$DIST/feed/mipsel_24kc" "$W/feed-again"
	rm -f "$W/feed-again/Packages" "$W/feed-again/Packages.gz" "$W/feed-again/packages.adb"
	scripts/feed.sh "$W/feed-again" >/dev/null 2>&1
	check "feed.sh is reproducible (mipsel_24kc indexes written twice: same bytes)" \
		sh -c 'for f in Packages Packages.gz $( [ -f "$2/packages.adb" ] && echo packages.adb); do cmp "$1/$f" "$2/$f" || exit 1; done' \
		_ "$W/feed-again" "$DIST/feed/mipsel_24kc"
fi

# --- feed Makefile agrees ------------------------------------------------------------------
# GNU make runs openwrt-package/mape-rs/Makefile's own recipes (Build/Prepare and every
# Package/<name>/install) against tests/pkg/sdk-stub, a stand-in for the SDK macros it uses;
# what each installs, and the metadata and scripts it declares, must be what scripts/pkgdef.sh
# (and so the prebuilt packages) say.
MK=openwrt-package/mape-rs/Makefile
if [ -f "$MK" ]; then
	sdk=$W/sdk
	mkdir -p "$sdk"
	printf '#!/bin/sh\necho fake mape\n' >"$W/fake-mape"
	chmod +x "$W/fake-mape"
	if PATH="$(dirname "${MAPE_PO2LMO:-/nonexistent/po2lmo}"):$PATH" make -k -C openwrt-package/mape-rs \
		TOPDIR="$ROOT/tests/pkg/sdk-stub" OUT="$sdk" FAKE_BIN="$W/fake-mape" all >"$W/sdk.log" 2>&1; then
		ok "Makefile: make runs Build/Prepare and every Package/<name>/install (tests/pkg/sdk-stub)"
	else
		bad "Makefile: make failed: $(tail -3 "$W/sdk.log" | tr '\n' ' ')"
	fi
	for name in "${PKG_NAMES[@]}"; do
		[ "$name" = luci-i18n-mape-ja ] && [ -z "$MAPE_PO2LMO" ] && continue
		pkg_meta "$name"
		want_arch=$([ "$PKG_ARCHKIND" = all ] && echo all)
		meta=$(cat "$sdk/$name.meta" 2>/dev/null)
		mk_deps=$(sed -n 's/^DEPENDS=\([^|]*\)|.*/\1/p' <<<"$meta" | tr ' ' '\n' | sed 's/^+//' | sed '/^$/d' | paste -sd, | sed 's/,/, /g')
		check "Makefile $name: DEPENDS ($mk_deps), PKGARCH, CONFLICTS, PROVIDES as scripts/pkgdef.sh" \
			test "$mk_deps|${meta#*|}" = "$PKG_DEPENDS|PKGARCH=$want_arch|CONFLICTS=$PKG_CONFLICTS|PROVIDES=$PKG_PROVIDES"
		scripts_ok=1
		for s in postinst prerm; do
			pkg_script "$name" "$s" >"$W/want-script"
			if [ -s "$W/want-script" ]; then
				cmp -s "$sdk/$name.$s" "$W/want-script" || scripts_ok=0
			else
				[ ! -e "$sdk/$name.$s" ] || scripts_ok=0
			fi
		done
		check "Makefile $name: postinst and prerm are the packages' (packaging/), none where they have none" test "$scripts_ok" = 1
		pkg_expected_files "$name" >"$W/expected-files"
		(cd "$sdk/$name" 2>/dev/null && find . \( -type f -o -type l \) | sort) >"$W/got-files"
		if cmp -s "$W/expected-files" "$W/got-files"; then
			ref=$W/ipk-mipsel_24kc-$name/data
			same=1
			while read -r p; do
				[ "$p" = ./usr/sbin/mape ] && continue
				cmp -s "$sdk/$name/$p" "$ref/$p" && [ "$(stat -c %a "$sdk/$name/$p")" = "$(stat -c %a "$ref/$p")" ] || same=0
			done <"$W/got-files"
			check "Makefile $name: installs the prebuilt package's files, same contents and modes ($(wc -l <"$W/got-files"))" test "$same" = 1
		else
			bad "Makefile $name: installs other files than scripts/pkgdef.sh: $(diff "$W/expected-files" "$W/got-files" | grep '^[<>]' | tr '\n' ' ')"
		fi
	done
	check "Makefile: PKG_LICENSE_FILES = LICENSE-MIT LICENSE-APACHE, both in the tree" \
		sh -c 'grep -qx "PKG_LICENSE_FILES:=LICENSE-MIT LICENSE-APACHE" "$1" && test -s LICENSE-MIT && test -s LICENSE-APACHE' _ "$MK"
else
	bad "$MK missing"
fi

# --- maintainer scripts against stub commands ----------------------------------------------
# ubus, nft, uci and pidof are stand-ins that log their calls; jsonfilter is OpenWrt's real one
# (from the userland build) and `mape` the host build, as the postinst runs them.
stub=$W/stub
mkdir -p "$stub/bin"
cat >"$stub/bin/ubus" <<'EOF'
#!/bin/sh
echo "ubus $*" >>"$STUB_LOG"
case "$*" in
*get_proto_handlers*) printf '%s\n' "$STUB_HANDLERS" ;;
*"network.interface dump"*) echo '{"interface":[]}' ;;
esac
exit 0
EOF
cat >"$stub/bin/nft" <<'EOF'
#!/bin/sh
echo "nft $*" >>"$STUB_LOG"
[ "$1" = list ] && printf 'table inet fw4\ntable ip mape_wanmap\ntable ip other\n'
exit 0
EOF
cat >"$stub/bin/uci" <<'EOF'
#!/bin/sh
echo "uci $*" >>"$STUB_LOG"
exit 0
EOF
# pidof: "opkg is running" while $STUB_BUSY exists
printf '#!/bin/sh\n[ -e "$STUB_BUSY" ]\n' >"$stub/bin/pidof"
ln -sf "$HOST" "$stub/bin/mape"
jf=""
if [ -n "$MAPE_APK" ] && [ -x "$(dirname "$MAPE_APK")/jsonfilter" ]; then jf=$(dirname "$MAPE_APK")/jsonfilter; fi
[ -n "$jf" ] && ln -sf "$jf" "$stub/bin/jsonfilter"
chmod +x "$stub/bin/ubus" "$stub/bin/nft" "$stub/bin/uci" "$stub/bin/pidof"
run_script() { # <script> <handlers json> <"VAR=value ..."> [script args...]
	local s=$1 h=$2 vars=$3
	shift 3
	: >"$stub/log"
	# shellcheck disable=SC2086
	env -i PATH="$stub/bin:/usr/bin:/bin" STUB_LOG="$stub/log" STUB_HANDLERS="$h" STUB_BUSY="$stub/busy" \
		TMPDIR="$stub/tmp" $vars sh "$s" "$@" >/dev/null 2>&1
	[ -e "$stub/busy" ] || sleep 1 # postinst backgrounds the restart
}
mkdir -p "$stub/tmp"
# get_proto_handlers as netifd answers it: every declared option under "validate".
handlers_with() { # <proto> <option names...>
	local p=$1 o sep=""
	shift
	printf '{"static":{"validate":{"ipaddr":"string"}},"%s":{"validate":{' "$p"
	for o in "$@"; do printf '%s"%s":"string"' "$sep" "$o"; sep=,; done
	printf '},"no_device":true}}'
}
opts() { "$HOST" netifd "$1" dump | python3 -c 'import json,sys; print(" ".join(c[0] for c in json.load(sys.stdin)["config"]))'; }
mape_opts=$(opts mape)
map_opts=$(opts map)
run_script packaging/postinst '{"static":{},"mape":{}}' "IPKG_INSTROOT=/tmp/imagebuild"
check "postinst: image build (IPKG_INSTROOT set): no ubus call" test ! -s "$stub/log"
if [ -n "$jf" ]; then
	# shellcheck disable=SC2086
	run_script packaging/postinst "$(handlers_with mape $mape_opts)" ""
	check "postinst: proto mape already known with all its options (upgrade): no network restart" \
		sh -c 'grep -q get_proto_handlers "$1" && ! grep -q "network restart" "$1"' _ "$stub/log"
	# shellcheck disable=SC2086
	run_script packaging/postinst "$(handlers_with mape ${mape_opts% *})" ""
	check "postinst: proto mape known without one of its options (new option): network restart" \
		grep -q "call network restart" "$stub/log"
	# shellcheck disable=SC2086
	run_script packaging/postinst "$(handlers_with map $map_opts)" "pkgname=mape-rs-map"
	check "postinst (mape-rs-map): our proto map already known: no network restart" \
		sh -c 'grep -q get_proto_handlers "$1" && ! grep -q "network restart" "$1"' _ "$stub/log"
	run_script packaging/postinst "$(handlers_with map peeraddr ip6prefix ip6prefixlen ipaddr ip4prefixlen psidlen psid offset ealen legacymap mtu ttl zone encaplimit tunlink type)" "pkgname=mape-rs-map"
	check "postinst (mape-rs-map): OpenWrt's proto map known (its options, no isp): network restart" \
		grep -q "call network restart" "$stub/log"
else
	echo "note: no OpenWrt jsonfilter: postinst's option comparison not exercised" >&2
fi
run_script packaging/postinst '{"static":{},"dhcp":{}}' ""
check "postinst: first install: 'ubus call network restart'" grep -q "call network restart" "$stub/log"
# shellcheck disable=SC2086
run_script packaging/postinst "$(handlers_with mape $mape_opts)" "pkgname=mape-rs-map"
check "postinst (mape-rs-map): first install (netifd has mape, not map): network restart" \
	grep -q "call network restart" "$stub/log"
# mape-rs and mape-rs-map in one transaction: one restart, after the package manager exits.
touch "$stub/busy"
run_script packaging/postinst '{"static":{}}' ""
cp "$stub/log" "$stub/log1"
run_script packaging/postinst '{"static":{}}' "pkgname=mape-rs-map"
cat "$stub/log" >>"$stub/log1"
check "postinst: no restart while the package manager runs" sh -c '! grep -q "network restart" "$1"' _ "$stub/log1"
rm -f "$stub/busy"
sleep 2
cat "$stub/log" >>"$stub/log1"
check "postinst: mape-rs + mape-rs-map together: one 'ubus call network restart', once it exited" \
	test "$(grep -c "call network restart" "$stub/log1")" = 1
run_script packaging/postinst '{"static":{}}' "MAPE_NO_NETWORK_RESTART=1"
check "postinst: MAPE_NO_NETWORK_RESTART=1: no restart" sh -c '! grep -q "network restart" "$1"' _ "$stub/log"
run_script packaging/prerm '' "" /usr/lib/opkg/info/mape-rs.prerm remove
check "prerm: deletes nft table ip mape_wanmap, nothing else" \
	sh -c 'grep -qx "nft delete table ip mape_wanmap" "$1" && [ "$(grep -c "nft delete" "$1")" = 1 ]' _ "$stub/log"
check "prerm: removes the fw4 include firewall.mape_rs" \
	sh -c 'grep -qx "uci -q delete firewall.mape_rs" "$1" && grep -qx "uci -q commit firewall" "$1"' _ "$stub/log"
run_script packaging/prerm '' "PKG_UPGRADE=1" /usr/lib/opkg/info/mape-rs.prerm upgrade
check "prerm: upgrade: nothing deleted" sh -c '! grep -q "delete" "$1"' _ "$stub/log"
run_script packaging/prerm '' "pkgname=mape-rs-map" /usr/lib/opkg/info/mape-rs-map.prerm remove
check "prerm (mape-rs-map): leaves mape-rs's nft tables and fw4 include alone" sh -c '! grep -q "delete" "$1"' _ "$stub/log"

# --- sizes ---------------------------------------------------------------------------------
echo
printf '%-26s %12s %12s %12s\n' "OpenWrt arch" "binary" ".ipk" ".apk"
for a in "${ARCHES[@]}"; do
	read -r arch _ <<<"$a"
	b=$DIST/bin/$arch/mape
	p=$DIST/mape-rs_${pkgversion}_${arch}.ipk
	k=$DIST/feed/$arch/mape-rs-$pkgversion.apk
	[ -f "$b" ] && [ -f "$p" ] && printf '%-26s %12s %12s %12s\n' "$arch" "$(stat -c %s "$b")" "$(stat -c %s "$p")" \
		"$([ -f "$k" ] && stat -c %s "$k" || echo -)"
done
m=$DIST/mape-rs_${pkgversion}_mipsel_24kc.ipk
if [ -f "$m" ]; then
	s=$(stat -c %s "$m")
	if [ "$s" -le "$GOAL" ]; then w="within"; else w="OVER"; fi
	echo "note: mipsel_24kc .ipk is $s bytes, $w the size goal of $GOAL bytes (not a failure)"
	if [ "$s" -le "$LIMIT" ]; then
		ok "mipsel_24kc .ipk $s bytes <= limit $LIMIT (reached $REACHED_IPK + 5 %)"
	else
		bad "mipsel_24kc .ipk $s bytes > limit $LIMIT (reached $REACHED_IPK + 5 %, or MAPE_IPK_LIMIT): it grew; scripts/size-report.sh shows what each part costs"
	fi
fi
b=$DIST/bin/mipsel_24kc/mape
if [ -f "$b" ]; then
	s=$(stat -c %s "$b")
	if [ "$s" -le "$BIN_LIMIT" ]; then
		ok "mipsel_24kc binary $s bytes <= limit $BIN_LIMIT (reached $REACHED_BIN + 5 %)"
	else
		bad "mipsel_24kc binary $s bytes > limit $BIN_LIMIT (reached $REACHED_BIN + 5 %, or MAPE_BIN_LIMIT): it grew; scripts/size-report.sh shows what each part costs"
	fi
fi
finish

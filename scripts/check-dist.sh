#!/usr/bin/env bash
# Checks what scripts/dist.sh produced in dist/:
#   - every binary runs under qemu user emulation (-cpu 24Kc for MIPS, cortex-a7/-a9 for ARM,
#     cortex-a53 for aarch64; x86_64 natively) and prints exactly what the host build prints
#     (stdout, stderr, exit status) for `mape calc --json` on v6plus, OCN, BIGLOBE, NURO
#     prefixes, an RFC 7597 explicit --rule, bad input (status 2), `mape rules`, and the
#     netifd handler's dry run (`mape netifd '' dump`, `setup ... --dry-run`, `teardown ...`);
#   - ELF: static (no interpreter, no NEEDED), class, endianness, machine, float ABI
#     (mips: o32 soft-float; armv7: EABI5 hard-float, VFP register arguments);
#   - each .ipk: a gzip'd tar (not ar) of ./debian-binary ./data.tar.gz ./control.tar.gz,
#     the expected tree and modes, the control fields, the maintainer scripts, reproducible;
#   - the feed Makefile agrees with the .ipk (Depends, scripts); the maintainer scripts work
#     against stub ubus/nft commands;
#   - the size of the mipsel .ipk: against a hard limit (MAPE_IPK_LIMIT, default 480 KiB, to
#     catch regressions) and, reported only, against the 200 KiB goal (MAPE_IPK_GOAL).
# Prints one `ok`/`FAIL` line per check and `N passed, M failed` at the end; exits 1 on failure.
#
# Usage: scripts/check-dist.sh            (after scripts/dist.sh; installs qemu-user-static,
#                                           file and binutils with apt-get when missing)
# Env:   MAPE_IPK_LIMIT, MAPE_IPK_GOAL (bytes), MAPE_RELEASE, MAPE_DIST_TARGET_DIR
set -uo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=$ROOT/dist
GOAL=${MAPE_IPK_GOAL:-204800}     # the issue's goal for the mipsel .ipk: reported only
LIMIT=${MAPE_IPK_LIMIT:-491520}   # hard limit (480 KiB): fails the check
export CARGO_TARGET_DIR=${MAPE_DIST_TARGET_DIR:-$ROOT/target/dist}

pass=0
fail=0
ok() { pass=$((pass + 1)); printf 'ok   %s\n' "$*"; }
bad() { fail=$((fail + 1)); printf 'FAIL %s\n' "$*"; }
check() { # check <description> <command...>
	local d=$1
	shift
	if "$@" >/dev/null 2>&1; then ok "$d"; else bad "$d"; fi
}
finish() {
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ]
	exit
}

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
# The tree every .ipk must hold: /usr/sbin/mape and all of files/.
expected_files() {
	{
		echo "./usr/sbin/mape"
		if [ -d files ]; then
			(cd files && find . \( -type f -o -type l \) ! -name '.gitkeep' ! -name '.gitignore' \
				! -name '*~' ! -name '.*.sw?' ! -name '*.orig' ! -name '*.rej')
		fi
	} | sort
}
expected_files >"$W/expected-files"
DEPENDS_WANT="kmod-ip6-tunnel, kmod-nft-nat, nftables, ubus"

for a in "${ARCHES[@]}"; do
	read -r arch _ <<<"$a"
	ipk=$DIST/mape-rs_${pkgversion}_${arch}.ipk
	if [ ! -f "$ipk" ]; then
		bad "$arch: $ipk missing"
		continue
	fi
	x=$W/ipk-$arch
	mkdir -p "$x/outer" "$x/data" "$x/control"
	if cmp -s -n 7 "$ipk" <(printf '!<arch>'); then
		bad "$arch: .ipk is an ar archive (opkg wants a gzip'd tar)"
		continue
	fi
	if gzip -t "$ipk" 2>/dev/null && [ "$(tar tzf "$ipk" | tr '\n' ' ')" = "./debian-binary ./data.tar.gz ./control.tar.gz " ]; then
		ok "$arch: .ipk is a gzip'd tar of ./debian-binary ./data.tar.gz ./control.tar.gz"
	else
		bad "$arch: .ipk outer archive: $(tar tzf "$ipk" 2>&1 | tr '\n' ' ')"
		continue
	fi
	tar xzf "$ipk" -C "$x/outer"
	check "$arch: debian-binary is 2.0" test "$(cat "$x/outer/debian-binary")" = "2.0"
	tar xzf "$x/outer/data.tar.gz" -C "$x/data" && tar xzf "$x/outer/control.tar.gz" -C "$x/control"

	# data
	(cd "$x/data" && find . \( -type f -o -type l \) | sort) >"$W/got-files"
	if cmp -s "$W/expected-files" "$W/got-files"; then
		ok "$arch: data tree = /usr/sbin/mape + files/ ($(wc -l <"$W/got-files") files)"
	else
		bad "$arch: data tree differs: $(diff "$W/expected-files" "$W/got-files" | grep '^[<>]' | tr '\n' ' ')"
	fi
	check "$arch: /usr/sbin/mape is dist/bin/$arch/mape" cmp "$x/data/usr/sbin/mape" "$DIST/bin/$arch/mape"
	same_files=1
	while read -r p; do
		[ "$p" = "./usr/sbin/mape" ] && continue
		cmp -s "files/$p" "$x/data/$p" || same_files=0
	done <"$W/expected-files"
	check "$arch: files/ copied unchanged" test "$same_files" = 1
	listing=$(tar tvzf "$x/outer/data.tar.gz")
	check "$arch: /usr/sbin/mape mode 0755" grep -q '^-rwxr-xr-x 0/0 .* \./usr/sbin/mape$' <<<"$listing"
	if [ -f files/lib/netifd/proto/mape.sh ]; then
		check "$arch: /lib/netifd/proto/mape.sh mode 0755" grep -q '^-rwxr-xr-x 0/0 .* \./lib/netifd/proto/mape\.sh$' <<<"$listing"
	else
		bad "$arch: files/lib/netifd/proto/mape.sh does not exist yet (the handler entry point)"
	fi
	if [ -f files/www/luci-static/resources/protocol/mape.js ]; then
		check "$arch: LuCI protocol/mape.js mode 0644" grep -q '^-rw-r--r-- 0/0 .* \./www/luci-static/resources/protocol/mape\.js$' <<<"$listing"
	fi
	check "$arch: every data entry owned by 0/0" test -z "$(awk '$2 != "0/0"' <<<"$listing")"

	# control
	ctl=$x/control/control
	field() { sed -n "s/^$1: //p" "$ctl"; }
	fields_ok=1
	why=""
	for kv in "Package=mape-rs" "Version=$pkgversion" "Architecture=$arch" "Section=net" \
		"Depends=$DEPENDS_WANT" "License=$(awk '/^license/ { gsub(/"/, ""); sub(/^license *= */, ""); print; exit }' Cargo.toml)"; do
		k=${kv%%=*}
		v=${kv#*=}
		[ "$(field "$k")" = "$v" ] || { fields_ok=0; why+=" $k='$(field "$k")'"; }
	done
	for k in Maintainer Description; do
		[ -n "$(field "$k")" ] || { fields_ok=0; why+=" no $k"; }
	done
	[ "$(field Installed-Size)" = "$(gzip -dc "$x/outer/data.tar.gz" | wc -c)" ] || { fields_ok=0; why+=" Installed-Size"; }
	if [ "$fields_ok" = 1 ]; then ok "$arch: control fields"; else bad "$arch: control fields:$why"; fi
	check "$arch: control.tar = control postinst postinst-pkg prerm prerm-pkg (no conffiles)" \
		test "$(cd "$x/control" && find . -type f | sort | tr '\n' ' ')" = "./control ./postinst ./postinst-pkg ./prerm ./prerm-pkg "
	check "$arch: postinst-pkg is packaging/postinst" cmp "$x/control/postinst-pkg" packaging/postinst
	check "$arch: prerm-pkg is packaging/prerm" cmp "$x/control/prerm-pkg" packaging/prerm
	check "$arch: maintainer scripts executable, sh -n clean" \
		sh -c 'for s in postinst postinst-pkg prerm prerm-pkg; do test -x "$1/$s" && sh -n "$1/$s" || exit 1; done' _ "$x/control"
done

# Reproducible: packaging the same binary again gives the same bytes.
if [ -f "$DIST/bin/mipsel_24kc/mape" ]; then
	mkdir -p "$W/again"
	# Same SOURCE_DATE_EPOCH as the package in dist/ (a commit since then would change it).
	epoch=$(tar --utc --full-time -tvzf "$DIST/mape-rs_${pkgversion}_mipsel_24kc.ipk" 2>/dev/null |
		awk 'NR == 1 { print $4 " " $5 }')
	epoch=$(date -u -d "$epoch" +%s 2>/dev/null || echo 0)
	SOURCE_DATE_EPOCH=$epoch scripts/ipk.sh "$DIST/bin/mipsel_24kc/mape" mipsel_24kc "$W/again" >/dev/null 2>&1
	check "ipk.sh is reproducible (mipsel_24kc packaged twice: same bytes)" \
		cmp "$W/again/mape-rs_${pkgversion}_mipsel_24kc.ipk" "$DIST/mape-rs_${pkgversion}_mipsel_24kc.ipk"
fi

# --- feed Makefile agrees ------------------------------------------------------------------
MK=openwrt-package/mape-rs/Makefile
if [ -f "$MK" ]; then
	mk_deps=$(sed -n 's/^[[:space:]]*DEPENDS:=//p' "$MK" | tr ' ' '\n' | sed -n 's/^+//p' | paste -sd, | sed 's/,/, /g')
	check "Makefile DEPENDS = .ipk Depends ($mk_deps)" test "$mk_deps" = "$DEPENDS_WANT"
	check "Makefile takes postinst/prerm from packaging/" \
		sh -c 'grep -q "packaging/postinst" "$1" && grep -q "packaging/prerm" "$1"' _ "$MK"
	check "Makefile installs /usr/sbin/mape and files/" \
		sh -c 'grep -q "/usr/sbin" "$1" && grep -q "files" "$1"' _ "$MK"
else
	bad "$MK missing"
fi

# --- maintainer scripts against stub commands ----------------------------------------------
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
printf '#!/bin/sh\nexit 1\n' >"$stub/bin/pidof"
chmod +x "$stub/bin/"*
run_script() { # <script> <handlers json> <"VAR=value ..."> [script args...]
	local s=$1 h=$2 vars=$3
	shift 3
	: >"$stub/log"
	# shellcheck disable=SC2086
	env -i PATH="$stub/bin:/usr/bin:/bin" STUB_LOG="$stub/log" STUB_HANDLERS="$h" $vars sh "$s" "$@" >/dev/null 2>&1
	sleep 1 # postinst backgrounds the restart
}
run_script packaging/postinst '{"static":{},"mape":{}}' "IPKG_INSTROOT=/tmp/imagebuild"
check "postinst: image build (IPKG_INSTROOT set): no ubus call" test ! -s "$stub/log"
run_script packaging/postinst '{"static":{},"mape":{"no-device":true}}' ""
check "postinst: proto mape already known (upgrade): no network restart" \
	sh -c 'grep -q get_proto_handlers "$1" && ! grep -q "network restart" "$1"' _ "$stub/log"
run_script packaging/postinst '{"static":{},"dhcp":{}}' ""
check "postinst: first install: 'ubus call network restart'" grep -q "call network restart" "$stub/log"
run_script packaging/postinst '{"static":{}}' "MAPE_NO_NETWORK_RESTART=1"
check "postinst: MAPE_NO_NETWORK_RESTART=1: no restart" sh -c '! grep -q "network restart" "$1"' _ "$stub/log"
run_script packaging/prerm '' "" /usr/lib/opkg/info/mape-rs.prerm remove
check "prerm: deletes nft table ip mape_wanmap, nothing else" \
	sh -c 'grep -qx "nft delete table ip mape_wanmap" "$1" && [ "$(grep -c "nft delete" "$1")" = 1 ]' _ "$stub/log"
check "prerm: removes the fw4 include firewall.mape_rs" \
	sh -c 'grep -qx "uci -q delete firewall.mape_rs" "$1" && grep -qx "uci -q commit firewall" "$1"' _ "$stub/log"
run_script packaging/prerm '' "PKG_UPGRADE=1" /usr/lib/opkg/info/mape-rs.prerm upgrade
check "prerm: upgrade: nothing deleted" sh -c '! grep -q "delete" "$1"' _ "$stub/log"

# --- sizes ---------------------------------------------------------------------------------
echo
printf '%-26s %12s %12s\n' "OpenWrt arch" "binary" ".ipk"
for a in "${ARCHES[@]}"; do
	read -r arch _ <<<"$a"
	b=$DIST/bin/$arch/mape
	p=$DIST/mape-rs_${pkgversion}_${arch}.ipk
	[ -f "$b" ] && [ -f "$p" ] && printf '%-26s %12s %12s\n' "$arch" "$(stat -c %s "$b")" "$(stat -c %s "$p")"
done
m=$DIST/mape-rs_${pkgversion}_mipsel_24kc.ipk
if [ -f "$m" ]; then
	s=$(stat -c %s "$m")
	if [ "$s" -le "$GOAL" ]; then w="within"; else w="OVER"; fi
	echo "note: mipsel_24kc .ipk is $s bytes, $w the size goal of $GOAL bytes (not a failure)"
	if [ "$s" -le "$LIMIT" ]; then
		ok "mipsel_24kc .ipk $s bytes <= limit $LIMIT (catches size regressions)"
	else
		bad "mipsel_24kc .ipk $s bytes > limit $LIMIT (MAPE_IPK_LIMIT): what grew?"
	fi
fi
finish

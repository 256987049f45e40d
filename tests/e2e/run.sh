#!/usr/bin/env bash
# End-to-end MAP-E bed on OpenWrt's real userland (issues 4 and 11; docs/testing-openwrt.md).
#
#   tests/e2e/run.sh [--break-psid] [-v]
#
# As root on a Debian 12 machine: installs what is missing (qemu-system-x86, nftables,
# iproute2, tcpdump, iputils-ping, kmod, python3, busybox), builds the OpenWrt userland once
# (tests/openwrt/userland.sh: netifd, ubusd, uci, rpcd, odhcp6c, opkg, fw4, ...), builds the
# x86_64 .ipk the release way (scripts/dist.sh x86_64, or takes $MAPE_IPK), installs it into an
# offline OpenWrt root with the real opkg and checks what opkg recorded, then boots the test
# VM (Debian's stock 6.1 kernel: real ip6tnl + nftables NAT; tests/vm/) and runs
# tests/e2e/bed.py inside: two OpenWrt routers (own ubusd/netifd/rpcd each) get the package by
# `opkg install` and are configured through UCI.
# Prints every check as "ok <name>" or "FAIL <name>: <reason>", then "N passed, M failed".
# Without the OpenWrt sources (a user's clone) it prints one "SKIP:" line and passes; in CI
# ($CI set) that is a failure.
#   --break-psid  give ce1 a rule with the wrong PSID: the port-set checks must FAIL and
#                 name the stray ports (the normal run does this once as a negative control)
#   -v            show the whole VM console, not only the check lines
# Env: MAPE_IPK (a prebuilt x86_64 .ipk; the other packages are taken from the same dist/ folder:
#      mape-rs-map, luci-proto-mape and feed/x86_64/*.apk), MAPE_OPENWRT_SRC (see userland.sh),
#      MAPE_VM_CACHE, MAPE_BED_STEADY_SECONDS (the steady-traffic phase, default 60),
#      MAPE_BED_PHASES (comma-separated: run only these of the bed's optional phases, for
#      working on one; see bed.py --help).
# Artifacts (console, captures, every daemon's log, bed.log): tests/e2e/out/<run>/.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
START=$SECONDS
ARGS=() VERBOSE= NAME=run BREAK=
while [ $# -gt 0 ]; do
	case $1 in
	--break-psid) ARGS+=("$1"); NAME=break-psid; BREAK=1 ;;
	-v) VERBOSE=1 ;;
	-h | --help) sed -n '2,/^set -u/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
	*) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

# A failure before the bed runs is still reported as a check.
infra_fail() {
	echo "FAIL $1"
	echo "0 passed, 1 failed"
	exit 1
}

[ "$(id -u)" = 0 ] || infra_fail "capabilities: run as root (network namespaces, apt-get, the VM)"

# ---- the OpenWrt userland (skips outside CI without the sources)
USERLAND=$("$ROOT/tests/openwrt/userland.sh" 2>"${TMPDIR:-/tmp}/mape-e2e-userland.log")
case $? in
0) ;;
77) grep -m1 '^SKIP:' "${TMPDIR:-/tmp}/mape-e2e-userland.log"; exit 0 ;;
*) infra_fail "userland: $(grep -v '^ ' "${TMPDIR:-/tmp}/mape-e2e-userland.log" | tail -3 | tr '\n' ' ')" ;;
esac

# ---- packages (the guest runs the host's own tools over 9p, so they are needed here)
missing=()
want() { # want PACKAGE TEST...
	local pkg=$1; shift
	"$@" >/dev/null 2>&1 || missing+=("$pkg")
}
want qemu-system-x86 command -v qemu-system-x86_64
want nftables test -x /usr/sbin/nft
want iproute2 test -x /usr/bin/ip -o -x /usr/sbin/ip -o -x /bin/ip
want tcpdump test -x /usr/bin/tcpdump -o -x /usr/sbin/tcpdump
want iputils-ping test -x /usr/bin/ping -o -x /bin/ping
want kmod test -x /usr/sbin/modprobe -a -x /usr/sbin/depmod
want python3 test -x /usr/bin/python3
want busybox test -x /usr/bin/busybox -o -x /bin/busybox
want dpkg command -v dpkg-deb
want gzip command -v gzip
if [ ${#missing[@]} -gt 0 ]; then
	command -v apt-get >/dev/null || infra_fail "capabilities: missing ${missing[*]} and no apt-get to install them"
	echo "# installing ${missing[*]}"
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
		>"${TMPDIR:-/tmp}/mape-e2e-apt.log" 2>&1 ||
		infra_fail "capabilities: apt-get install ${missing[*]} failed (see ${TMPDIR:-/tmp}/mape-e2e-apt.log)"
fi

# ---- the VM: kernel + initramfs
echo "# preparing the VM (tests/vm/mkinitramfs.sh)"
KVER=$("$ROOT/tests/vm/mkinitramfs.sh" 2>"${TMPDIR:-/tmp}/mape-e2e-vm.log") ||
	infra_fail "capabilities: cannot prepare the VM kernel: $(tail -3 "${TMPDIR:-/tmp}/mape-e2e-vm.log" | tr '\n' ' ')"

# ---- the packages: x86_64 .ipk and .apk as a release builds them (static musl binary,
# scripts/ipk.sh, scripts/apk.sh)
if [ -n "${MAPE_IPK:-}" ]; then
	IPK=$MAPE_IPK
	DIST=$(cd "$(dirname "$IPK")" && pwd)
else
	echo "# building the x86_64 packages (scripts/dist.sh x86_64)"
	export MAPE_DIST_TARGET_DIR=${MAPE_DIST_TARGET_DIR:-$HOME/.cache/mape-rs/dist-target}
	(cd "$ROOT" && scripts/dist.sh x86_64) >"${TMPDIR:-/tmp}/mape-e2e-dist.log" 2>&1 ||
		infra_fail "build: scripts/dist.sh x86_64 failed: $(grep -m3 -E '^(error|dist.sh)' "${TMPDIR:-/tmp}/mape-e2e-dist.log" | tr '\n' ' ')"
	IPK=$(ls "$ROOT"/dist/mape-rs_*_x86_64.ipk 2>/dev/null | head -1)
	DIST=$ROOT/dist
fi
[ -f "$IPK" ] || infra_fail "build: no x86_64 .ipk ($IPK)"
# The others from the same build: dist/*.ipk and dist/feed/x86_64/*.apk (with MAPE_IPK: next to it,
# or in feed/x86_64 below its folder).
pkgfile() { # pkgfile GLOB...: the first file that exists
	local f
	for f in "$@"; do [ -f "$f" ] && { echo "$f"; return 0; }; done
	return 1
}
MAP_IPK=$(pkgfile "$DIST"/mape-rs-map_*_all.ipk) &&
	LUCI_IPK=$(pkgfile "$DIST"/luci-proto-mape_*_all.ipk) &&
	APK=$(pkgfile "$DIST"/feed/x86_64/mape-rs-[0-9]*.apk "$DIST"/mape-rs-[0-9]*.apk) &&
	LUCI_APK=$(pkgfile "$DIST"/feed/x86_64/luci-proto-mape-*.apk "$DIST"/luci-proto-mape-*.apk) ||
	infra_fail "build: mape-rs-map and luci-proto-mape (.ipk) and mape-rs and luci-proto-mape (.apk) must be next to $IPK (scripts/dist.sh x86_64 builds them)"

# Offline installs (on the host) with each package manager: FORMAT:FILE.
PKGS=("ipk:$IPK" "apk:$APK")
# What each router installs live, CE:FILE (one package manager per router): ce1 takes the .ipk
# packages with opkg (mape-rs-map too: the option-94 phases), ce2 the .apk packages with apk.
ROUTER_PKGS=("ce1:$IPK" "ce1:$MAP_IPK" "ce1:$LUCI_IPK" "ce2:$APK" "ce2:$LUCI_APK")

OUT=$HERE/out/$NAME
rm -rf "$OUT" && mkdir -p "$OUT" || infra_fail "setup: cannot create $OUT"
: >"$OUT/host-results.txt"
for p in "${PKGS[@]}"; do
	# offline install with the real package manager (on the host: no VM needed)
	echo "# installing $(basename "${p#*:}") into an offline OpenWrt root (tests/openwrt/offline-install.py)"
	OPENWRT_USERLAND=$USERLAND python3 "$ROOT/tests/openwrt/offline-install.py" "${p%%:*}" "${p#*:}" \
		"$OUT/offline-root-${p%%:*}" | tee -a "$OUT/host-results.txt"
done
VMPKGS=()
for p in "${ROUTER_PKGS[@]}"; do
	cp "${p#*:}" "$OUT/" || infra_fail "setup: cannot copy ${p#*:}"
	VMPKGS+=(--pkg "${p%%:*}:/run/mape-vm/xchg/$(basename "${p#*:}")")
done

# ---- run the bed in the VM. The guest cannot see /tmp, /run or /var of the host: a checkout
# there is staged (tests/ only: the bed needs nothing else of the tree).
. "$ROOT/tests/vm/paths.sh"
TESTS=$ROOT/tests
if vm_hidden "$ROOT"; then
	TESTS=${MAPE_VM_STAGE:-${HOME:-/root}/.cache/mape-rs/stage}/tests-$(echo "$ROOT" | md5sum | cut -c1-12)
	{ rm -rf "$TESTS" && mkdir -p "$TESTS" && cp -a "$ROOT/tests/openwrt" "$TESTS/" &&
		(cd "$ROOT/tests" && tar --exclude=e2e/out -cf - e2e) | tar -xf - -C "$TESTS"; } ||
		infra_fail "setup: cannot stage $ROOT/tests in $TESTS"
fi
echo "# booting the VM (kernel $KVER) and running the bed; artifacts in ${OUT#"$ROOT"/}"
# The VM's limit grows with the steady-traffic phase (MAPE_BED_STEADY_SECONDS, default 60).
STEADY=${MAPE_BED_STEADY_SECONDS:-60}
case $STEADY in '' | *[!0-9]*) infra_fail "setup: MAPE_BED_STEADY_SECONDS=$STEADY is not a number of seconds" ;; esac
VMTIMEOUT=$((900 + STEADY))
VMARGS=(-q -t "$VMTIMEOUT" -m 1536 -s 1 -o "$OUT" -l "$OUT/console.log"
	-e "MAPE_BED_STEADY_SECONDS=$STEADY" -e "MAPE_BED_PHASES=${MAPE_BED_PHASES:-}"
	"$TESTS/e2e/guest.sh" --userland "$USERLAND" "${VMPKGS[@]}" ${ARGS[@]+"${ARGS[@]}"})
if [ -n "$VERBOSE" ]; then
	"$ROOT/tests/vm/vmrun.sh" "${VMARGS[@]}"
	RC=$?
else
	"$ROOT/tests/vm/vmrun.sh" "${VMARGS[@]}" | { grep -E --line-buffered '^(ok |FAIL |# )' || true; }
	RC=${PIPESTATUS[0]}
fi

count() { cat "$OUT/host-results.txt" "$OUT/results.txt" 2>/dev/null | grep -c "^$1"; }
PASSED=$(count 'ok ') FAILED=$(count 'FAIL ')
case $RC in
0) ;;
124) echo "FAIL vm: timed out after $VMTIMEOUT s (see ${OUT#"$ROOT"/}/console.log)"; FAILED=$((FAILED + 1)) ;;
125 | 126) echo "FAIL vm: the VM stopped without reporting a result (see ${OUT#"$ROOT"/}/console.log):"
	tail -5 "$OUT/console.log" 2>/dev/null | sed 's/^/#   /'
	FAILED=$((FAILED + 1)) ;;
*) [ "$FAILED" -gt 0 ] || { echo "FAIL bed: exited $RC without a failed check (see ${OUT#"$ROOT"/}/console.log)"; FAILED=1; } ;;
esac
[ "$PASSED" -gt 0 ] || [ "$FAILED" -gt 0 ] || { echo "FAIL bed: no check ran"; FAILED=1; }
echo "# $((SECONDS - START)) s in all"
[ -z "$BREAK" ] || echo "# --break-psid: failures are expected; the port-set checks above name the stray ports"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]

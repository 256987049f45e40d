#!/usr/bin/env bash
# End-to-end MAP-E test bed on a real kernel (issue 4).
#
#   tests/e2e/run.sh [--break-psid] [--apply real|dry-run] [-v]
#
# As root on a Debian 12 machine: installs what is missing (qemu-system-x86, nftables,
# iproute2, tcpdump, iputils-ping, kmod, python3), prepares the test VM (Debian's stock
# 6.1 kernel: real ip6tnl + nftables NAT; cached in tests/vm/cache, or in ~/.cache/mape-rs/vm for a checkout under /tmp), builds `mape` with
# cargo (or takes $MAPE_BIN), boots the VM and runs tests/e2e/bed.py inside it.
# Prints every check as "ok <name>" or "FAIL <name>: <reason>", then "N passed, M failed";
# exits non-zero on any failure, including a missing capability (nothing is skipped).
#   --break-psid  give ce1 a rule with the wrong PSID: the port-set checks must FAIL and
#                 name the stray ports (the normal run does this once as a negative control)
#   --apply       how the CEs are configured: the real handler run inside each CE namespace
#                 with a fake ubus feeding the netifd stand-in (default), or the handler's
#                 --dry-run payloads applied by the stand-in
#   -v            show the whole VM console, not only the check lines
# Artifacts (console, captures, handler payloads, bed.log): tests/e2e/out/<run>/.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
START=$SECONDS
ARGS=() VERBOSE= NAME=run BREAK= APPLY_TAG=
while [ $# -gt 0 ]; do
	case $1 in
	--break-psid) ARGS+=("$1"); NAME=break-psid; BREAK=1 ;;
	--apply) [ $# -ge 2 ] || { echo "run.sh: --apply needs real or dry-run" >&2; exit 2; }
		ARGS+=("$1" "$2"); [ "$2" = real ] || APPLY_TAG=-apply-$2; shift ;;
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
want dpkg command -v dpkg-deb
want gzip command -v gzip
if [ ${#missing[@]} -gt 0 ]; then
	command -v apt-get >/dev/null || infra_fail "capabilities: missing ${missing[*]} and no apt-get to install them"
	echo "# installing ${missing[*]}"
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
		>"${TMPDIR:-/tmp}/mape-e2e-apt.log" 2>&1 ||
		infra_fail "capabilities: apt-get install ${missing[*]} failed (see ${TMPDIR:-/tmp}/mape-e2e-apt.log)"
fi

# ---- the VM: kernel + initramfs in tests/vm/cache
echo "# preparing the VM (tests/vm/mkinitramfs.sh)"
KVER=$("$ROOT/tests/vm/mkinitramfs.sh" 2>"${TMPDIR:-/tmp}/mape-e2e-vm.log") ||
	infra_fail "capabilities: cannot prepare the VM kernel: $(tail -3 "${TMPDIR:-/tmp}/mape-e2e-vm.log" | tr '\n' ' ')"

# ---- the mape binary
if [ -n "${MAPE_BIN:-}" ]; then
	BIN=$MAPE_BIN
	[ -x "$BIN" ] || infra_fail "build: MAPE_BIN=$BIN is not executable"
else
	command -v cargo >/dev/null || infra_fail "build: cargo not found (install Rust, or set MAPE_BIN)"
	echo "# building mape (cargo build --bin mape)"
	BIN=$(cd "$ROOT" && cargo build --locked --bin mape --message-format=json-render-diagnostics 2>"${TMPDIR:-/tmp}/mape-e2e-build.log" |
		/usr/bin/python3 -c '
import json, sys
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "mape" and m.get("executable"):
        exe = m["executable"]
print(exe or "")') || true
	[ -n "$BIN" ] && [ -x "$BIN" ] ||
		infra_fail "build: cargo build failed: $(grep -m3 -E '^error' "${TMPDIR:-/tmp}/mape-e2e-build.log" | tr '\n' ' ')"
fi

# ---- run the bed in the VM
OUT=$HERE/out/$NAME$APPLY_TAG
rm -rf "$OUT" && mkdir -p "$OUT" || infra_fail "setup: cannot create $OUT"
cp "$BIN" "$OUT/mape" || infra_fail "setup: cannot copy $BIN"
echo "# booting the VM (kernel $KVER) and running the bed; artifacts in ${OUT#"$ROOT"/}"
if [ -n "$VERBOSE" ]; then
	"$ROOT/tests/vm/vmrun.sh" -q -t 900 -o "$OUT" -l "$OUT/console.log" "$HERE/guest.sh" ${ARGS[@]+"${ARGS[@]}"}
	RC=$?
else
	"$ROOT/tests/vm/vmrun.sh" -q -t 900 -o "$OUT" -l "$OUT/console.log" "$HERE/guest.sh" ${ARGS[@]+"${ARGS[@]}"} |
		{ grep -E --line-buffered '^(ok |FAIL |# )' || true; }
	RC=${PIPESTATUS[0]}
fi

RES=$OUT/results.txt
PASSED=$(grep -c '^ok ' "$RES" 2>/dev/null) || PASSED=0
FAILED=$(grep -c '^FAIL ' "$RES" 2>/dev/null) || FAILED=0
case $RC in
0) ;;
124) echo "FAIL vm: timed out after 900 s (see ${OUT#"$ROOT"/}/console.log)"; FAILED=$((FAILED + 1)) ;;
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

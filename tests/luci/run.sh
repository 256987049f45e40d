#!/usr/bin/env bash
# Browser tests of the LuCI protocol page files/www/luci-static/resources/protocol/mape.js, in
# headless Chromium driven by playwright-core (docs/luci.md says what each part proves):
#   1. unit checks (driver.js, harness.js): mape.js with LuCI stand-ins (stubs/), every field
#      check and text, in a few seconds and without the OpenWrt sources;
#   2. real LuCI (real/): LuCI's own JavaScript and view/network/interfaces.js from the LuCI
#      subset, the real ubusd, rpcd (with our exec plugin and ACL) and uci, in private
#      namespaces (needs root and ../shared/openwrt-src via tests/openwrt/userland.sh; without
#      the sources it prints one "SKIP:" line, in CI that is a failure).
# Installs what it needs when missing (Debian's chromium and a Japanese font via apt,
# playwright-core via npm ci). Ends with one "N passed, M failed" line for both parts; exits
# non-zero on any failure.
#
# Usage: tests/luci/run.sh
#   CHROMIUM=/path/to/chromium    another browser binary
#   MAPE_BIN=/path/to/mape        the binary for the rpcd plugin (default: cargo build, debug)
#   MAPE_LUCI_LMO=a.lmo[:b.lmo]   our Japanese catalogue: then no string of the form may be
#                                 untranslated (the Japanese page always loads luci-base's own).
#                                 Default: po/ja/*.po compiled with LuCI's po2lmo when they
#                                 exist; MAPE_LUCI_LMO=none checks luci-base's catalogue only
#   MAPE_LUCI_SHOTS=DIR           where the screenshots go (default /tmp/mape-luci-shots)
#   LUCI_TEST_VERBOSE=1           every ubus call and console message
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
ROOT=$(cd ../.. && pwd)

fail() {
	echo "tests/luci: $*" >&2
	echo "0 passed, 1 failed"
	exit 1
}

export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

command -v node >/dev/null || fail "node is not installed (Node.js >= 20 is needed)"
command -v npm >/dev/null || fail "npm is not installed"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || fail "Node.js $(node --version) is too old: playwright-core needs >= 20"

# Debian packages: the browser, and a Japanese font for the screenshots of the Japanese page.
pkgs=()
[ -x "$CHROMIUM" ] || pkgs+=(chromium)
fc-list 2>/dev/null | grep -qi 'ipagothic\|noto sans cjk' || pkgs+=(fonts-ipafont-gothic)
if [ ${#pkgs[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "== installing ${pkgs[*]} (apt)"
	{ DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >/tmp/mape-luci-apt.log 2>&1 ||
		{ tail -20 /tmp/mape-luci-apt.log >&2; fail "apt-get install ${pkgs[*]} failed (log: /tmp/mape-luci-apt.log)"; }
fi
[ -x "$CHROMIUM" ] || fail "$CHROMIUM not found: install Debian's chromium (apt-get install chromium) or set CHROMIUM"

# npm ci only when node_modules does not match package-lock.json
if ! cmp -s package-lock.json node_modules/.mape-lock 2>/dev/null; then
	echo "== npm ci (playwright-core)"
	npm ci --no-audit --no-fund --loglevel=error >/tmp/mape-luci-npm.log 2>&1 ||
		{ tail -20 /tmp/mape-luci-npm.log >&2; fail "npm ci failed (log: /tmp/mape-luci-npm.log)"; }
	cp package-lock.json node_modules/.mape-lock
fi

total_pass=0 total_fail=0
# Runs a part, shows its output, adds its final "N passed, M failed" to the totals.
part() {
	local out rc=0 counts
	out=$(mktemp)
	"$@" 2>&1 | tee "$out" || rc=$?
	counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1 || true)
	rm -f "$out"
	if [ -z "$counts" ]; then
		echo "tests/luci: $1 ended without a count (exit status $rc)" >&2
		total_fail=$((total_fail + 1))
		return
	fi
	set -- $counts
	total_pass=$((total_pass + $1))
	total_fail=$((total_fail + $3))
	[ "$rc" = 0 ] || [ "$3" != 0 ] || total_fail=$((total_fail + 1))
}

browser=$("$CHROMIUM" --version 2>/dev/null | head -1)
echo "== LuCI unit checks: mape.js with LuCI stand-ins (tests/luci/stubs), headless $browser"
part node driver.js

echo "== real LuCI: LuCI's JavaScript and interfaces view, ubusd, rpcd + our plugin and ACL, uci (tests/luci/real)"
userland_rc=0
USERLAND=$("$ROOT/tests/openwrt/userland.sh") || userland_rc=$?
if [ "$userland_rc" = 77 ]; then
	: # userland.sh printed the SKIP line (sources absent outside CI)
elif [ "$userland_rc" != 0 ]; then
	echo "tests/luci: the OpenWrt userland is not available (tests/openwrt/userland.sh exit $userland_rc)" >&2
	total_fail=$((total_fail + 1))
elif [ "$(id -u)" != 0 ]; then
	if [ -n "${CI:-}" ]; then
		echo "tests/luci: FAIL: the real-LuCI test needs root (mount, network and PID namespaces)" >&2
		total_fail=$((total_fail + 1))
	else
		echo "SKIP: the real-LuCI test needs root (mount, network and PID namespaces)"
	fi
else
	if [ -z "${MAPE_BIN:-}" ]; then
		(cd "$ROOT" && cargo build --locked --quiet --bin mape) || fail "cargo build --bin mape failed"
		target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
			node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
		MAPE_BIN=$target/debug/mape
	fi
	[ -x "$MAPE_BIN" ] || fail "MAPE_BIN=$MAPE_BIN is not an executable"
	if [ -z "${MAPE_LUCI_LMO:-}" ] && compgen -G "$ROOT/po/ja/*.po" >/dev/null; then
		lmo_dir=$(mktemp -d)
		trap 'rm -rf "$lmo_dir"' EXIT
		for po in "$ROOT"/po/ja/*.po; do
			lmo=$lmo_dir/$(basename "$po" .po).ja.lmo
			"$USERLAND/bin/po2lmo" "$po" "$lmo" || fail "po2lmo $po failed"
			MAPE_LUCI_LMO=${MAPE_LUCI_LMO:+$MAPE_LUCI_LMO:}$lmo
		done
		echo "   (our Japanese catalogue: po/ja/*.po through po2lmo)"
	fi
	[ "${MAPE_LUCI_LMO:-}" != none ] || MAPE_LUCI_LMO=
	export MAPE_LUCI_LMO
	part unshare --mount --net --pid --fork --mount-proc --propagation private \
		env USERLAND="$USERLAND" MAPE_BIN="$MAPE_BIN" bash "$HERE/real/ns.sh"
fi

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]

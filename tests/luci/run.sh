#!/usr/bin/env bash
# Browser test of the LuCI protocol page files/www/luci-static/resources/protocol/mape.js:
# loads it into headless Chromium with LuCI stand-ins (tests/luci/stubs), fills the form and
# checks validation errors, UCI values and the status display. Installs what it needs when
# missing (Debian's chromium via apt, playwright-core via npm ci). Ends with "N passed, M failed";
# exits non-zero on any failure.
#
# Usage: tests/luci/run.sh          (CHROMIUM=/path/to/chromium to use another binary)
set -euo pipefail
cd "$(dirname "$0")"

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

if [ ! -x "$CHROMIUM" ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "== installing chromium (apt)"
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/tmp/mape-luci-apt.log 2>&1 ||
			{ tail -20 /tmp/mape-luci-apt.log >&2; fail "apt-get install chromium failed (log: /tmp/mape-luci-apt.log)"; }
	fi
	[ -x "$CHROMIUM" ] || fail "$CHROMIUM not found: install Debian's chromium (apt-get install chromium) or set CHROMIUM"
fi

# npm ci only when node_modules does not match package-lock.json
if ! cmp -s package-lock.json node_modules/.mape-lock 2>/dev/null; then
	echo "== npm ci (playwright-core)"
	npm ci --no-audit --no-fund --loglevel=error >/tmp/mape-luci-npm.log 2>&1 ||
		{ tail -20 /tmp/mape-luci-npm.log >&2; fail "npm ci failed (log: /tmp/mape-luci-npm.log)"; }
	cp package-lock.json node_modules/.mape-lock
fi

echo "== LuCI protocol page (mape.js) in headless $("$CHROMIUM" --version 2>/dev/null | head -1)"
exec node driver.js

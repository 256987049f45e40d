#!/usr/bin/env bash
# The real OpenWrt userland for the tests, built once from source and cached.
#
#   tests/openwrt/userland.sh          prints the prefix (bin/, sbin/, lib/, share/) on stdout
#
# Sources: $MAPE_OPENWRT_SRC, else ../shared/openwrt-src next to the checkout (CI always has
# it). The build (tests/openwrt/build-userland.sh: libubox+jshn, ubusd/ubus, uci, libnl-tiny,
# ucode, udebug, jsonfilter, netifd, rpcd, odhcp6c, opkg-lede, apk-tools 3, firewall4's root/,
# LuCI's po2lmo, and the unpacked LuCI subset and OpenWrt's dhcpv6.sh/dhcpv6.script) goes to
# ~/.cache/mape-rs/openwrt-userland/<key>, where <key> hashes every tarball and the build script:
# new sources or a changed script build a new prefix, anything else reuses it (about 1 min cold).
#
# Exit status: 0 with the prefix on stdout; 77 when the sources are absent outside CI (one line
# on stderr says so: a user's clone skips these tests); 1 when they are absent in CI ($CI set),
# or the build fails (its log is named).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

SRC=${MAPE_OPENWRT_SRC:-}
if [ -z "$SRC" ] && [ -d "$ROOT/../shared/openwrt-src" ]; then SRC=$ROOT/../shared/openwrt-src; fi
if [ -z "$SRC" ] || [ ! -f "$SRC/netifd.tar.gz" ]; then
	why="OpenWrt userland sources not found (set MAPE_OPENWRT_SRC to a folder like ../shared/openwrt-src)"
	if [ -n "${CI:-}" ]; then
		echo "userland: FAIL: $why; CI must have them" >&2
		exit 1
	fi
	echo "SKIP: $why" >&2
	exit 77
fi
SRC=$(cd "$SRC" && pwd)

# Host packages the build needs (Debian names).
missing=()
for p in build-essential:gcc cmake:cmake pkg-config:pkg-config libjson-c-dev:/usr/include/json-c/json.h \
	meson:meson ninja-build:ninja libssl-dev:/usr/include/openssl/ssl.h zlib1g-dev:/usr/include/zlib.h \
	busybox:busybox liblua5.1-0-dev:/usr/include/lua5.1/lua.h; do
	pkg=${p%%:*} probe=${p#*:}
	case $probe in /*) [ -e "$probe" ] ;; *) command -v "$probe" >/dev/null ;; esac || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "userland: installing ${missing[*]}" >&2
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
		>"${TMPDIR:-/tmp}/mape-userland-apt.log" 2>&1 || {
		echo "userland: FAIL: apt-get install ${missing[*]} (see ${TMPDIR:-/tmp}/mape-userland-apt.log)" >&2
		exit 1
	}
fi

key=$( (cd "$SRC" && sha256sum -- *.tar.gz && sha256sum "$HERE/build-userland.sh" | cut -c1-64) | sha256sum | cut -c1-16)
BASE=${MAPE_USERLAND_CACHE:-${HOME:-/root}/.cache/mape-rs/openwrt-userland}
P=$BASE/$key
mkdir -p "$BASE"
exec 9>"$BASE/.lock"
flock 9 # parallel test runs wait for one build
if [ ! -e "$P/.done" ]; then
	rm -rf "$P" && mkdir -p "$P"
	log=$BASE/build-$key.log
	echo "userland: building the OpenWrt userland into $P (log $log)" >&2
	if ! SRC=$SRC PREFIX=$P bash "$HERE/build-userland.sh" >"$log" 2>&1; then
		echo "userland: FAIL: build failed; last lines of $log:" >&2
		tail -n 15 "$log" >&2
		exit 1
	fi
	touch "$P/.done"
	# keep only the two newest prefixes
	ls -1dt "$BASE"/*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf
fi
echo "$P"

#!/usr/bin/env bash
# The real-LuCI browser test's backend, run by tests/luci/run.sh as PID 1 of private mount,
# network and PID namespaces (unshare -m -n -p --fork --mount-proc): nothing it mounts, starts or
# writes outlives it or reaches the host.
#
# rpcd and uci have compile-time paths (/etc/config, /var/run/rpcd, <prefix>/libexec/rpcd,
# <prefix>/share/rpcd/acl.d), so the namespace gets:
#   /run (= /var/run)      a fresh tmpfs: ubusd's socket, rpcd's sessions and uci deltas, the
#                          handler's state files (/var/run/mape)
#   /etc                   an overlay with a tmpfs upper layer; /etc/config holds tests/luci/real/config
#   <userland prefix>      an overlay adding libexec/rpcd/mape and share/rpcd/acl.d/*.json
#   /usr/sbin              an overlay adding /usr/sbin/mape (the binary under test)
# then starts the real ubusd and rpcd and hands over to test.js (which starts the stand-ins,
# the HTTP server and Chromium).
#
# Environment: USERLAND (tests/openwrt/userland.sh's prefix), MAPE_BIN (the mape binary).
set -euo pipefail
: "${USERLAND:?}" "${MAPE_BIN:?}"
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)

fail() { echo "tests/luci/real: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

ip link set lo up || fail "cannot bring up lo in the network namespace"

T=$(mktemp -d /tmp/mape-luci-real.XXXXXX)
trap 'cd /; umount -l "$T" 2>/dev/null; rmdir "$T" 2>/dev/null || true' EXIT
mount -t tmpfs -o mode=0755 tmpfs "$T"
mount -t tmpfs -o mode=0755 tmpfs /run

mkdir -p "$T/etc.up" "$T/etc.work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$T/etc.up,workdir=$T/etc.work" /etc ||
	fail "cannot mount an overlay on /etc (needs overlayfs)"
mkdir -p /etc/config
cp "$HERE"/config/* /etc/config/

mkdir -p "$T/prefix/libexec/rpcd" "$T/prefix/share/rpcd/acl.d"
install -m 0755 "$ROOT/files/usr/libexec/rpcd/mape" "$T/prefix/libexec/rpcd/mape"
cp "$ROOT"/files/usr/share/rpcd/acl.d/*.json "$T/prefix/share/rpcd/acl.d/"
# rpcd's own ACL for the unauthenticated session (session access, login), from its sources
cp "$USERLAND/src/rpcd/unauthenticated.json" "$T/prefix/share/rpcd/acl.d/"
cp "$HERE"/acl.d/*.json "$T/prefix/share/rpcd/acl.d/"
mount -t overlay overlay -o "lowerdir=$T/prefix:$USERLAND" "$USERLAND"

mkdir -p "$T/sbin"
install -m 0755 "$MAPE_BIN" "$T/sbin/mape"
mount -t overlay overlay -o "lowerdir=$T/sbin:/usr/sbin" /usr/sbin

export PATH="$USERLAND/bin:$USERLAND/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
export MAPE_LUCI_TMP=$T

ubusd >"$T/ubusd.log" 2>&1 &
for _ in $(seq 100); do [ -S /var/run/ubus/ubus.sock ] && break; sleep 0.05; done
[ -S /var/run/ubus/ubus.sock ] || fail "ubusd did not create /var/run/ubus/ubus.sock"

rpcd >"$T/rpcd.log" 2>&1 &
for _ in $(seq 100); do ubus -t 1 list session >/dev/null 2>&1 && break; sleep 0.05; done
ubus -t 1 list session >/dev/null 2>&1 || fail "rpcd did not register the session object ($(cat "$T/rpcd.log"))"

cd "$HERE"
node test.js

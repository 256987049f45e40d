#!/usr/bin/env bash
# Host entry of the plain-Linux end-to-end test (issue 7): builds mape, prepares the test VM if
# needed (tests/vm/mkinitramfs.sh), boots it with tests/vm/vmrun.sh and runs
# tests/e2e/linux-up.sh inside as root (real ip6tnl + nft NAT; the host kernel lacks ip6tnl).
# The guest prints ok/FAIL lines and "N passed, M failed"; the exit status is the guest's.
#
#   tests/e2e/linux-run.sh [-t SECS]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TMO=600
while getopts t:h o; do
	case $o in t) TMO=$OPTARG ;; *) sed -n '2,/^set -u/{/^#/s/^# \{0,1\}//p}' "$0"; exit 2 ;; esac
done

# What the guest uses comes from the host root: install it here when missing.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v iptables-restore >/dev/null || need+=(iptables)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v nft >/dev/null || need+=(nftables)
command -v ping >/dev/null || need+=(iputils-ping)
if [ ${#need[@]} -gt 0 ]; then
	echo "linux-run: installing ${need[*]}" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "${need[@]}" >/dev/null || { echo "FAIL - installing ${need[*]}"; echo "0 passed, 1 failed"; exit 1; }
fi

cargo build --quiet --bin mape || { echo "FAIL - cargo build"; echo "0 passed, 1 failed"; exit 1; }
tests/vm/mkinitramfs.sh >/dev/null || { echo "FAIL - tests/vm/mkinitramfs.sh"; echo "0 passed, 1 failed"; exit 1; }
BIN=$ROOT/target/debug/mape
. tests/vm/paths.sh
if vm_hidden "$BIN"; then # the guest cannot see a checkout under /tmp: stage the binary
	STAGE=${MAPE_VM_STAGE:-${HOME:-/root}/.cache/mape-rs/stage}
	mkdir -p "$STAGE" && BIN=$STAGE/mape-linux-e2e && cp "$ROOT/target/debug/mape" "$BIN"
fi
exec tests/vm/vmrun.sh -q -t "$TMO" -e MAPE_BIN="$BIN" tests/e2e/linux-up.sh

#!/usr/bin/env bash
# Runs every test of mape-rs. Installs what the tests need when it is missing.
# Usage: ./test.sh            (CI runs exactly this through .ci/run; needs root)
set -euo pipefail
cd "$(dirname "$0")"

# --- what the tests need --------------------------------------------------------------
need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
need ip iproute2
need nft nftables
need tcpdump tcpdump
need ping iputils-ping
need python3 python3
need systemd-analyze systemd
need iptables-restore iptables
if [ ${#need_pkgs[@]} -gt 0 ]; then
	echo "== installing ${need_pkgs[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

echo "== formatting and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

echo "== unit, integration, property and namespace tests (cargo test)"
cargo test --all-targets --locked

echo "== fuzzing every parser for a bounded time (scripts/fuzz.sh; longer: scripts/fuzz.sh 600)"
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

echo "== OpenWrt's real userland in a VM: opkg install, netifd + proto mape, MAP-E traffic, prefix changes, restarts, bad configs, fw4 (tests/e2e/run.sh)"
tests/e2e/run.sh

echo "== plain Linux: mape up/down, iptables and networkd files through a real ip6tnl (VM)"
tests/e2e/linux-run.sh

echo "== the README's runnable commands, as written (scripts/check-readme.sh)"
scripts/check-readme.sh
scripts/readme-ja.py   # README.ja.md has a Japanese section for every section of README.md

echo "== LuCI protocol page in headless Chromium: unit checks, then real LuCI + ubusd + rpcd + uci (tests/luci)"
bash tests/luci/run.sh

echo "== release builds, .ipk/.apk packages and feeds for six router architectures (scripts/dist.sh), checked under qemu"
# The cross-build cache lives outside the checkout so that repeated CI runs on one machine
# are incremental; a fresh machine builds from scratch (about 7-15 minutes).
export MAPE_DIST_TARGET_DIR=${MAPE_DIST_TARGET_DIR:-$HOME/.cache/mape-rs/dist-target}
scripts/dist.sh
scripts/check-dist.sh
echo "== what each part of the mipsel binary costs, by crate (scripts/size-report.sh --no-build; docs/sizes.md)"
scripts/size-report.sh --no-build | sed -n '/^By crate/,/all symbols/p'

echo "== packages with OpenWrt's real opkg and apk: installs, map conflicts, feeds, Japanese catalogue (tests/pkg/run.sh)"
tests/pkg/run.sh || [ $? = 77 ]

echo "== the router binaries on Debian's own mipsel, armhf and arm64 kernels (QEMU system emulation; tests/arch/run.sh)"
tests/arch/run.sh
